// How big a remote file may be and how long one request for it may take: the rules every
// downloader path (probe, requests, their retries) applies, in one place.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "modelfs/fetch/config.h"

namespace modelfs::fetch::detail {

// No model file comes near this (the largest single files, GGUF and safetensors shards, are tens
// of GiB; Hugging Face refuses files over 50 GB); a size above it is a server lying to make us
// reserve or wait for ever.
constexpr std::uint64_t kMaxRemoteSize = std::uint64_t{1} << 40;  // 1 TiB

// Why a file of `size` bytes, of no catalogued size, is refused ("N bytes, more than ..."): more
// than kMaxRemoteSize, or more than the free space of the filesystem of `dir` (the store's
// partial/ folder; skipped when `dir` is empty). nullopt: acceptable.
std::optional<std::string> size_refusal(std::uint64_t size, const std::filesystem::path& dir);

// How long a request expected to carry `bytes` may take in all: cfg.transfer_timeout for each
// chunk_size bytes (rounded up; at least one). A range request carries at most one chunk; a
// server without ranges sends the whole file in one request, which gets as many deadlines as it
// has chunks.
std::chrono::milliseconds request_deadline(const FetchConfig& cfg, std::uint64_t bytes);

// The error of a request past its deadline, naming the setting to raise.
std::string deadline_message(const FetchConfig& cfg, std::chrono::milliseconds allowed);

}  // namespace modelfs::fetch::detail
