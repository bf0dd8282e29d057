// A1111 and Forge: textual-inversion embeddings live in embeddings/ at the webui root (not under
// models/), and webui-user.sh may move model folders with command-line flags in
// COMMANDLINE_ARGS. Only the plain `[export] COMMANDLINE_ARGS="..."` assignment is read (the last
// one wins, as in the shell); `$VAR` and `~` in it are expanded from this process's environment,
// which is what the user's shell would mostly see too.
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "install_config.h"

namespace modelfs::adopt::detail {

namespace {

std::string trim(std::string_view s) {
    std::size_t b = 0, e = s.size();
    while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
    return std::string(s.substr(b, e - b));
}

// Shell-like words: whitespace separates, quotes group, backslash escapes outside '...'.
std::vector<std::string> words(std::string_view s) {
    std::vector<std::string> out;
    std::string cur;
    bool in_word = false;
    char quote = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (quote) {
            if (c == quote)
                quote = 0;
            else if (c == '\\' && quote == '"' && i + 1 < s.size())
                cur += s[++i];
            else
                cur += c;
        } else if (c == '"' || c == '\'') {
            quote = c;
            in_word = true;
        } else if (c == '\\' && i + 1 < s.size()) {
            cur += s[++i];
            in_word = true;
        } else if (c == ' ' || c == '\t') {
            if (in_word) out.push_back(cur);
            cur.clear();
            in_word = false;
        } else {
            cur += c;
            in_word = true;
        }
    }
    if (in_word) out.push_back(cur);
    return out;
}

// The value of the last COMMANDLINE_ARGS assignment, unquoted one level.
std::optional<std::string> commandline_args(const std::filesystem::path& script) {
    std::ifstream in(script);
    std::optional<std::string> value;
    std::string line;
    while (std::getline(in, line)) {
        std::string t = trim(line);
        if (t.starts_with("export ")) t = trim(t.substr(7));
        if (!t.starts_with("COMMANDLINE_ARGS=")) continue;
        const std::vector<std::string> w = words(t.substr(17));
        std::string v;
        for (const auto& x : w) {
            if (!x.empty() && x.front() == '#') break;
            v += (v.empty() ? "" : " ") + x;
        }
        value = v;
    }
    return value;
}

}  // namespace

ConfigDirs a1111_dirs(const std::filesystem::path& root) {
    static const std::map<std::string, std::string> kFlags = {
        {"--ckpt-dir", "Stable-diffusion"},   {"--lora-dir", "Lora"},
        {"--lyco-dir-backcompat", "LyCORIS"}, {"--vae-dir", "VAE"},
        {"--embeddings-dir", "embeddings"},   {"--hypernetwork-dir", "hypernetworks"},
        {"--esrgan-models-path", "ESRGAN"},   {"--controlnet-dir", "ControlNet"},
    };
    ConfigDirs out;
    bool embeddings_flag = false;
    std::filesystem::path data_dir = root;  // --data-dir moves embeddings/ with models/
    const std::filesystem::path script = root / "webui-user.sh";
    if (std::error_code ec; std::filesystem::is_regular_file(script, ec)) {
        if (auto args = commandline_args(script)) {
            const std::vector<std::string> w = words(*args);
            for (std::size_t i = 0; i < w.size(); ++i) {
                std::string flag = w[i], value;
                bool has_value = false;
                if (auto eq = flag.find('='); eq != flag.npos) {
                    value = flag.substr(eq + 1);
                    flag = flag.substr(0, eq);
                    has_value = true;
                }
                const bool dirs_flag = flag == "--models-dir" || flag == "--data-dir" ||
                                       flag == "--forge-ref-a1111-home";
                auto it = kFlags.find(flag);
                if (it == kFlags.end() && !dirs_flag) continue;
                if (!has_value) {
                    if (i + 1 >= w.size()) {
                        out.notes.push_back("webui-user.sh: " + flag +
                                            " without a folder, ignored");
                        continue;
                    }
                    value = w[++i];
                }
                const std::filesystem::path p = absolute_against(expand_user_and_vars(value), root);
                if (flag == "--forge-ref-a1111-home") {
                    // Forge then also lists that webui's models; they belong to that install.
                    out.notes.push_back("webui-user.sh: --forge-ref-a1111-home " + p.string() +
                                        ": Forge also reads the models of that install; adopt it "
                                        "too so both keep them");
                } else if (flag == "--models-dir") {
                    out.models_dir = p;
                } else if (flag == "--data-dir") {
                    out.models_dir = p / "models";
                    data_dir = p;
                } else {
                    if (flag == "--embeddings-dir") embeddings_flag = true;
                    out.dirs.push_back({p, it->second, "webui-user.sh: " + flag});
                }
            }
        }
    }
    if (!embeddings_flag) {
        const std::filesystem::path emb = data_dir / "embeddings";
        if (std::error_code ec; std::filesystem::is_directory(emb, ec))
            out.dirs.push_back({emb, "embeddings", "layout: embeddings/ beside models/"});
    }
    return out;
}

}  // namespace modelfs::adopt::detail
