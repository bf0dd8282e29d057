// The persisted side of a download: which byte ranges of STORE/partial/<hex>.part have arrived
// and are durable (<hex>.state, JSON), and a set of byte ranges to track them in memory. The
// format is documented in store/FORMAT.md ("Downloads").
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/store/hash.h"

namespace modelfs::fetch::detail {

// Disjoint, non-adjacent half-open ranges [begin, end).
class RangeSet {
  public:
    void add(std::uint64_t begin, std::uint64_t end);
    void clear() { m_.clear(); }
    bool contains(std::uint64_t begin, std::uint64_t end) const;
    // End of the range that starts at 0 (0 when there is none).
    std::uint64_t prefix() const;
    std::uint64_t total() const;
    bool empty() const { return m_.empty(); }
    // The holes of [0, size).
    std::vector<std::pair<std::uint64_t, std::uint64_t>> gaps(std::uint64_t size) const;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges() const;

  private:
    std::map<std::uint64_t, std::uint64_t> m_;  // begin -> end
};

struct PartialState {
    Sha256 key;
    std::uint64_t size = 0;
    std::string source;     // URL of the source the bytes came from
    std::string validator;  // its ETag (or Last-Modified) then; empty: unknown
    RangeSet done;
};

std::filesystem::path part_path(const std::filesystem::path& partial_dir, const Sha256& key);
std::filesystem::path state_path(const std::filesystem::path& partial_dir, const Sha256& key);

// Reads a state file; nullopt when missing or unreadable (a download then starts over).
std::optional<PartialState> read_state(const std::filesystem::path& file);
// Writes it durably: a temporary file, fsync, rename over the old one, fsync of the folder.
// The caller has made the ranges it lists durable in the part file first.
void write_state(const std::filesystem::path& file, const PartialState& s);

}  // namespace modelfs::fetch::detail
