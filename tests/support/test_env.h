// Helpers for tests that touch real files and run the real `modelfs` program.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace modelfs::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
  public:
    explicit TempDir(const std::string& tag = "modelfs-test");
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& rel) const { return path_ / rel; }

  private:
    std::filesystem::path path_;
};

// Writes `size` pseudo-random bytes derived from `seed` (same seed, same bytes).
void write_random_file(const std::filesystem::path& p, std::uint64_t size, std::uint64_t seed);
void write_text_file(const std::filesystem::path& p, const std::string& text);
// The root files and folders an install of A1111 (webui.py, launch.py, modules/) or of ComfyUI
// (main.py, folder_paths.py, comfy/) has in its repository, for install detection to find. Written
// out here, not read from the tool registry under test.
void make_a1111_markers(const std::filesystem::path& root);
void make_comfyui_markers(const std::filesystem::path& root);
std::string read_file(const std::filesystem::path& p);
// SHA-256 hex of a file, computed independently of the store's code path (one plain read).
std::string sha256_hex_of_file(const std::filesystem::path& p);

struct CliResult {
    int exit_code = -1;  // -1: killed by a signal
    int signal = 0;
    std::string out, err;
};

// Path of the built `modelfs` binary.
std::filesystem::path modelfs_binary();

// Runs `modelfs ARGS...` to completion, capturing stdout and stderr. `env` adds or overrides
// environment variables. MODELFS_CONFIG is /dev/null unless `env` says otherwise (set it to ""
// for the usual lookup), so the tester's own config file is never read.
CliResult run_modelfs(const std::vector<std::string>& args,
                      const std::map<std::string, std::string>& env = {});

// Runs any program (absolute path) to completion, capturing stdout and stderr.
CliResult run_program(const std::string& program, const std::vector<std::string>& args,
                      const std::map<std::string, std::string>& env = {});

// Starts `modelfs ARGS...` in the background with output to /dev/null and MODELFS_CONFIG
// /dev/null; returns its pid.
pid_t spawn_modelfs(const std::vector<std::string>& args);
// The same, with stdout and stderr appended to `log`.
pid_t spawn_modelfs(const std::vector<std::string>& args, const std::filesystem::path& log);
// Waits for a child; returns its CliResult-style exit code (-1 if killed).
int wait_child(pid_t pid, int* signal = nullptr);

// Runs `check` in a forked child as nobody (uid/gid 65534), so a root test process can see what
// permissions deny an ordinary user while keeping its own identity. `check` returns what went
// wrong, empty when all is well (exceptions count as failures).
struct AsNobody {
    bool skipped = false;  // the child could not become nobody
    bool ok = false;
    std::string message;  // what `check` returned, or why the child failed
};
AsNobody run_as_nobody(const std::function<std::string()>& check);

// Polls `pred` every 20 ms until it holds or `limit` has passed (a mount shows changes made
// elsewhere within a second or so); returns its last answer.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
}

}  // namespace modelfs::testing
