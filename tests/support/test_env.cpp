#include "support/test_env.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "modelfs/store/hash.h"

extern char** environ;

namespace stdfs = std::filesystem;

namespace modelfs::testing {

TempDir::TempDir(const std::string& tag) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + tag + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed: " + tmpl);
    path_ = buf.data();
}

TempDir::~TempDir() {
    std::error_code ec;
    // Blobs are read-only files in read-only-ish folders; make everything writable first.
    for (auto it = stdfs::recursive_directory_iterator(path_, ec);
         !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec))
        stdfs::permissions(it->path(), stdfs::perms::owner_all, stdfs::perm_options::add, ec);
    stdfs::remove_all(path_, ec);
}

void write_random_file(const stdfs::path& p, std::uint64_t size, std::uint64_t seed) {
    stdfs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
    std::vector<std::uint64_t> chunk(1 << 16);
    while (size > 0) {
        for (auto& w : chunk) w = rng();
        std::size_t n = std::min<std::uint64_t>(size, chunk.size() * 8);
        out.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(n));
        size -= n;
    }
    if (!out) throw std::runtime_error("cannot write " + p.string());
}

void write_text_file(const stdfs::path& p, const std::string& text) {
    if (p.has_parent_path()) stdfs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + p.string());
}

void make_a1111_markers(const stdfs::path& root) {
    stdfs::create_directories(root / "modules");
    write_text_file(root / "webui.py", "# a1111\n");
    write_text_file(root / "launch.py", "# a1111\n");
}

void make_comfyui_markers(const stdfs::path& root) {
    stdfs::create_directories(root / "comfy");
    write_text_file(root / "main.py", "# comfy\n");
    write_text_file(root / "folder_paths.py", "# comfy\n");
}

std::string read_file(const stdfs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + p.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string sha256_hex_of_file(const stdfs::path& p) {
    return sha256_of(read_file(p)).hex();
}

stdfs::path modelfs_binary() {
    if (const char* b = std::getenv("MODELFS_BINARY"); b && *b) return b;
    return MODELFS_BINARY;
}

namespace {

std::vector<std::string> make_env(const std::map<std::string, std::string>& extra) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e; ++e) {
        std::string kv = *e;
        auto eq = kv.find('=');
        if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (const auto& [k, v] : extra) env[k] = v;
    std::vector<std::string> out;
    for (const auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
    std::vector<char*> out;
    for (auto& s : v) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

pid_t spawn(const std::string& program, const std::vector<std::string>& args,
            const std::map<std::string, std::string>& env, int out_fd, int err_fd) {
    std::vector<std::string> argv{program};
    argv.insert(argv.end(), args.begin(), args.end());
    auto envs = make_env(env);
    auto cargv = c_strings(argv), cenv = c_strings(envs);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    else
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (err_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    else
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
    return pid;
}

std::string slurp_fd(int fd) {
    std::string s;
    ::lseek(fd, 0, SEEK_SET);
    char buf[65536];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) s.append(buf, static_cast<size_t>(n));
    return s;
}

}  // namespace

int wait_child(pid_t pid, int* signal) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) throw std::runtime_error("waitpid failed");
    if (WIFSIGNALED(status)) {
        if (signal) *signal = WTERMSIG(status);
        return -1;
    }
    return WEXITSTATUS(status);
}

namespace {

// The config file of whoever runs the tests must not change what the tests see.
std::map<std::string, std::string> without_user_config(std::map<std::string, std::string> env) {
    env.try_emplace("MODELFS_CONFIG", "/dev/null");
    return env;
}

}  // namespace

CliResult run_modelfs(const std::vector<std::string>& args,
                      const std::map<std::string, std::string>& env) {
    return run_program(modelfs_binary().string(), args, without_user_config(env));
}

CliResult run_program(const std::string& program, const std::vector<std::string>& args,
                      const std::map<std::string, std::string>& env) {
    // Temp files rather than pipes: no deadlock on large output, no reader thread.
    FILE* out = std::tmpfile();
    FILE* err = std::tmpfile();
    pid_t pid = spawn(program, args, env, fileno(out), fileno(err));
    CliResult r;
    r.exit_code = wait_child(pid, &r.signal);
    r.out = slurp_fd(fileno(out));
    r.err = slurp_fd(fileno(err));
    std::fclose(out);
    std::fclose(err);
    return r;
}

pid_t spawn_modelfs(const std::vector<std::string>& args) {
    return spawn(modelfs_binary().string(), args, without_user_config({}), -1, -1);
}

pid_t spawn_modelfs(const std::vector<std::string>& args, const std::filesystem::path& log) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("cannot open " + log.string());
    try {
        pid_t pid = spawn(modelfs_binary().string(), args, without_user_config({}), fd, fd);
        ::close(fd);
        return pid;
    } catch (...) {
        ::close(fd);
        throw;
    }
}

AsNobody run_as_nobody(const std::function<std::string()>& check) {
    AsNobody out;
    int pipefd[2];
    if (::pipe(pipefd) != 0) {
        out.message = std::string("pipe: ") + std::strerror(errno);
        return out;
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
        out.message = std::string("fork: ") + std::strerror(errno);
        ::close(pipefd[0]);
        ::close(pipefd[1]);
        return out;
    }
    if (pid == 0) {
        ::close(pipefd[0]);
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(77);
        std::string msg;
        try {
            msg = check();
        } catch (const std::exception& e) {
            msg = e.what();
            if (msg.empty()) msg = "an exception without a message";
        }
        (void)!::write(pipefd[1], msg.data(), msg.size());
        ::_exit(msg.empty() ? 0 : 1);
    }
    ::close(pipefd[1]);
    char buf[512];
    for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) out.message.append(buf, n);
    ::close(pipefd[0]);
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        out.message += " (the child did not exit normally)";
        return out;
    }
    out.skipped = WEXITSTATUS(status) == 77;
    out.ok = WEXITSTATUS(status) == 0;
    return out;
}

}  // namespace modelfs::testing
