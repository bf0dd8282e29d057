// Import: turn user paths into planned models, ingest their files in parallel, then catalogue
// each model in its own transaction so one bad file never spoils the others.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "modelfs/store/escape.h"
#include "modelfs/store/gguf.h"
#include "modelfs/store/model_check.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/names.h"
#include "modelfs/store/safe_open.h"
#include "modelfs/store/text.h"
#include "store_impl.h"

namespace stdfs = std::filesystem;

namespace modelfs {
namespace {

// Extensions of files that are models (anything else in a folder is skipped, not imported).
constexpr std::string_view kModelExtensions[] = {
    ".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".gguf", ".onnx",
};

bool is_model_file(const std::string& filename) {
    // Compound extensions (".fooocus.patch") are models too.
    std::string l = lower(split_extension(filename).second);
    return std::find(std::begin(kModelExtensions), std::end(kModelExtensions), l) !=
               std::end(kModelExtensions) ||
           l.find('.', 1) != std::string::npos;
}

}  // namespace

// A name is stored as given and later becomes a path in every view: the rule of names.h, and
// '@', which separates a version label.
void check_model_name(const std::string& name) {
    std::string why = relative_path_problem(name, kMaxNameComponent);
    if (why.empty() && name.find('@') != std::string::npos)
        why = "'@' is reserved for version labels";
    if (!why.empty())
        throw StoreError(ErrorKind::bad_input,
                         "invalid model name '" + terminal_safe(name) + "': " + why);
}

bool is_model_file_name(const std::string& filename) {
    return is_model_file(filename);
}

namespace {

// Gives a moved file back to the user as an ordinary writable copy of its blob (the blob itself
// may already be shared with another model, so it is never renamed away).
bool restore_from_blob(const BlobStore& blobs, const Sha256& sha, const stdfs::path& dest,
                       std::error_code& ec) {
    stdfs::copy_file(blobs.path_of(sha), dest, ec);
    if (!ec)
        stdfs::permissions(dest,
                           stdfs::perms::owner_read | stdfs::perms::owner_write |
                               stdfs::perms::group_read | stdfs::perms::others_read,
                           ec);
    return !ec;
}

struct FileJob {
    std::size_t plan = 0;  // index of the model this file belongs to
    stdfs::path src;
    std::string display;  // path as the user gave it
    std::optional<SafetensorsInfo> header;
    std::string gguf_architecture;  // general.architecture of a .gguf, for its category
    std::uint64_t size = 0;
    Ingested result;
    // Stored as extents while it was read (it shares tensors with stored blobs; tensor_split.h).
    std::optional<SplitReport> split;
    std::string error;
    // A move in progress: its journal, kept until the catalog commit.
    std::optional<StagingFile> journal;
    bool source_renamed = false;  // the user's file now lives in the store (same-fs move)
    bool delete_source_after_commit = false;
    // Root importing another user's files (safe_open.h): `src` is then absolute with no link in
    // it, opened without following any and judged as this user.
    std::shared_ptr<const ActingUser> as;
};

struct ModelPlan {
    stdfs::path source;
    std::optional<Category> category;
    std::string name;
    std::string ext;
    bool tree = false;
    std::vector<std::size_t> jobs;
    std::vector<std::string> tree_paths;
    std::vector<std::string> category_folders;  // folder names above the file, nearest first
    std::string error;
};

class Importer {
  public:
    Importer(Store::Impl& s, const ImportOptions& o, Progress* p) : s_(s), opts_(o), progress_(p) {}

    ImportReport run(const std::vector<stdfs::path>& paths) {
        for (const auto& p : paths) plan_path(p);
        if (opts_.name && plans_.size() != 1)
            throw StoreError(ErrorKind::bad_input,
                             "--name needs exactly one model to import, but the paths hold " +
                                 std::to_string(plans_.size()));
        read_headers();
        resolve_categories();
        StoreLock lock(s_.root, StoreLock::shared);
        results_.resize(plans_.size());
        remaining_ = std::make_unique<std::atomic<std::size_t>[]>(plans_.size());
        for (std::size_t i = 0; i < plans_.size(); ++i) remaining_[i] = plans_[i].jobs.size();
        ingest_all();
        for (std::size_t i = 0; i < plans_.size(); ++i) {
            if (!results_[i]) results_[i] = commit(plans_[i]);  // plans with no files
            report_.items.push_back(std::move(*results_[i]));
        }
        return std::move(report_);
    }

  private:
    void fail_path(const stdfs::path& p, const std::string& why) {
        ImportItem it;
        it.source = p;
        it.outcome = ImportItem::Outcome::failed;
        it.error = why;
        report_.items.push_back(std::move(it));
    }

    std::size_t add_job(const stdfs::path& p, std::uint64_t size) {
        FileJob j;
        j.plan = plans_.size();  // the plan being built is pushed after its jobs
        j.src = p;
        j.display = p.string();
        j.size = size;
        j.as = as_;
        jobs_.push_back(std::move(j));
        if (progress_) {
            progress_->total_bytes += size;
            progress_->total_items += 1;
        }
        return jobs_.size() - 1;
    }

    // Folder names from `dir` upwards (at most `depth`), nearest first.
    static std::vector<std::string> ancestors(const stdfs::path& dir, int depth) {
        std::vector<std::string> out;
        stdfs::path d = dir;
        for (int i = 0; i < depth && d.has_filename(); ++i, d = d.parent_path())
            out.push_back(d.filename().string());
        return out;
    }

    void plan_file(const stdfs::path& p, std::uint64_t size, std::string name,
                   std::vector<std::string> folders) {
        ModelPlan m;
        m.source = p;
        const std::string leaf = p.filename().string();
        auto named = name.empty() ? file_model_name(leaf)
                                  : single_file_name(name, split_extension(leaf).second);
        m.name = std::move(named.name);
        m.ext = std::move(named.ext);
        m.category_folders = std::move(folders);
        m.jobs.push_back(add_job(p, size));
        plans_.push_back(std::move(m));
    }

    void plan_tree(const stdfs::path& dir) {
        ModelPlan m;
        m.source = dir;
        m.tree = true;
        m.category = Category::diffusers;
        m.name = stdfs::absolute(dir).lexically_normal().filename().string();
        if (m.name.empty())
            m.name = stdfs::absolute(dir).lexically_normal().parent_path().filename();
        std::vector<std::pair<std::string, stdfs::path>> files;
        std::error_code ec;
        for (stdfs::recursive_directory_iterator
                 it(dir, stdfs::directory_options::skip_permission_denied, ec),
             end;
             !ec && it != end; it.increment(ec)) {
            std::string fname = it->path().filename().string();
            if (fname.starts_with(".")) {
                if (it->is_directory(ec)) it.disable_recursion_pending();
                continue;
            }
            if (!it->is_regular_file(ec)) continue;
            files.emplace_back(it->path().lexically_relative(dir).generic_string(), it->path());
        }
        if (ec) {
            fail_path(dir, "cannot read folder " + dir.string() + ": " + ec.message());
            return;
        }
        std::sort(files.begin(), files.end());
        for (auto& [rel, path] : files) {
            m.tree_paths.push_back(rel);
            m.jobs.push_back(add_job(path, stdfs::file_size(path, ec)));
        }
        plans_.push_back(std::move(m));
    }

    void plan_path(const stdfs::path& given) {
        std::error_code ec;
        auto as = ActingUser::for_tree(given);
        as_ = as ? std::make_shared<const ActingUser>(std::move(*as)) : nullptr;
        // Acting for a user: every later open resolves this path with no link in it.
        const stdfs::path p = as_ ? stdfs::weakly_canonical(stdfs::absolute(given), ec) : given;
        auto st = stdfs::status(p, ec);
        if (ec || !stdfs::exists(st)) {
            fail_path(p, p.string() + ": no such file or folder");
            return;
        }
        if (::access(p.c_str(), R_OK) != 0) {
            fail_path(p, p.string() + ": " + std::strerror(errno));
            return;
        }
        stdfs::path abs = stdfs::absolute(p).lexically_normal();
        if (abs.filename().empty()) abs = abs.parent_path();
        if (stdfs::is_regular_file(st)) {
            plan_file(p, stdfs::file_size(p, ec), opts_.name.value_or(""),
                      ancestors(abs.parent_path(), 4));
            return;
        }
        if (!stdfs::is_directory(st)) {
            fail_path(p, p.string() + ": not a regular file or folder");
            return;
        }
        if (stdfs::exists(p / "model_index.json", ec)) {
            plan_tree(p);
            if (opts_.name && !plans_.empty()) plans_.back().name = *opts_.name;
            return;
        }
        walk(p, abs);
    }

    // A folder of models: every model file below it becomes a model named by its path relative
    // to the nearest folder that names a category (ComfyUI `loras/sdxl/x.safetensors` ->
    // lora "sdxl/x"), diffusers folders become multi-file models.
    void walk(const stdfs::path& root, const stdfs::path& abs_root) {
        std::set<std::pair<dev_t, ino_t>> seen;
        std::vector<std::string> root_folders = ancestors(abs_root, 4);
        std::vector<std::pair<stdfs::path, std::vector<std::string>>> stack{{root, {}}};
        while (!stack.empty()) {
            auto [dir, rel_parts] = std::move(stack.back());
            stack.pop_back();
            struct stat dst;
            if (::stat(dir.c_str(), &dst) != 0 || !seen.insert({dst.st_dev, dst.st_ino}).second)
                continue;  // unreadable, or a symlink loop
            std::error_code ec;
            std::vector<stdfs::directory_entry> entries;
            for (stdfs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
                entries.push_back(*it);
            if (ec) {
                fail_path(dir, "cannot read folder " + dir.string() + ": " + ec.message());
                continue;
            }
            std::sort(entries.begin(), entries.end());
            for (const auto& e : entries) {
                std::string fname = e.path().filename().string();
                if (fname.starts_with(".")) continue;
                if (as_ && e.is_symlink(ec)) {
                    fail_path(e.path(), e.path().string() +
                                            ": a symbolic link, not followed while root imports "
                                            "the files of " +
                                            as_->name);
                    continue;
                }
                if (e.is_directory(ec)) {
                    if (stdfs::exists(e.path() / "model_index.json", ec)) {
                        plan_tree(e.path());
                        continue;
                    }
                    auto parts = rel_parts;
                    parts.push_back(fname);
                    stack.emplace_back(e.path(), std::move(parts));
                    continue;
                }
                if (!e.is_regular_file(ec)) {
                    if (e.is_symlink(ec))
                        fail_path(e.path(), e.path().string() + ": broken symlink");
                    continue;
                }
                if (!is_model_file(fname)) {
                    ++report_.skipped_files;
                    continue;
                }
                // Nearest folder naming a category: inside the walk first, then above it.
                std::vector<std::string> folders(rel_parts.rbegin(), rel_parts.rend());
                folders.insert(folders.end(), root_folders.begin(), root_folders.end());
                std::string name;
                std::size_t cat_at = folders.size();
                for (std::size_t i = 0; i < folders.size(); ++i)
                    if (category_from_folder(folders[i])) {
                        cat_at = i;
                        break;
                    }
                // Sub-folders below the category folder (or below the walk root) stay in the name.
                std::size_t keep = std::min(cat_at, rel_parts.size());
                for (std::size_t i = keep; i-- > 0;) name += folders[i] + "/";
                name += fname;
                plan_file(e.path(), e.file_size(ec), name, std::move(folders));
            }
        }
    }

    // The completeness rule commit_file applies too (model_check.h), then the safetensors header
    // of any file that has one, whatever its name, for the category and the blob record.
    void read_headers() {
        for (auto& j : jobs_) {
            UniqueFd fd;
            try {
                fd = open_source(j);
            } catch (const std::exception& e) {
                j.error = e.what();
                continue;
            }
            try {
                const std::string fname = j.src.filename().string();
                // An empty file inside a multi-file model (an empty README) is part of it; only
                // formats that are checked must be complete there too.
                const bool empty_tree_file = plans_[j.plan].tree && j.size == 0 &&
                                             model_format_of(fname) == ModelFormat::unchecked;
                if (!empty_tree_file) {
                    if (auto why = incomplete_model_reason(fd.get(), j.size, fname)) {
                        j.error = j.display + ": " + *why + " (file not imported)";
                        continue;
                    }
                }
                if (model_format_of(fname) == ModelFormat::gguf) {
                    // Complete per the check above; a version it cannot check has no category.
                    if (auto g = read_gguf_header(fd.get(), j.size))
                        j.gguf_architecture = g->architecture;
                } else if (j.size >= 8) {
                    j.header = read_safetensors_header(fd.get(), j.size);
                }
            } catch (const GgufError&) {
                // Only reached for a version incomplete_model_reason does not check.
            } catch (const SafetensorsError&) {
                // Not safetensors content: fine for any name the rule above did not check.
            } catch (const std::system_error& e) {
                j.error = j.display + ": " + e.what();
            }
        }
    }

    void resolve_categories() {
        for (auto& m : plans_) {
            if (opts_.category) {
                m.category = opts_.category;
            } else if (!m.category) {
                for (const auto& f : m.category_folders)
                    if (auto c = category_from_folder(f)) {
                        m.category = c;
                        break;
                    }
                if (!m.category && !m.tree && jobs_[m.jobs[0]].header)
                    m.category = category_from_tensors(*jobs_[m.jobs[0]].header);
                if (!m.category && !m.tree)
                    m.category =
                        category_from_gguf_architecture(jobs_[m.jobs[0]].gguf_architecture);
                if (!m.category) m.category = Category::other;
            }
            try {
                check_model_name(m.name);
                for (const auto& rel : m.tree_paths)
                    check_relative_path(rel, terminal_safe(m.source.string()) + ": file path");
            } catch (const StoreError& e) {
                m.error = e.what();
            }
        }
    }

    void ingest_all() {
        unsigned n = opts_.jobs ? opts_.jobs : std::max(1u, std::thread::hardware_concurrency());
        // Likely duplicates go after everything else, so that the file they duplicate is stored
        // by then and they only need hashing.
        std::vector<bool> dup = opts_.move ? std::vector<bool>(jobs_.size()) : likely_duplicates();
        std::vector<std::size_t> order(jobs_.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        // Within each phase biggest first, so one huge file does not start last and finish alone.
        std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) {
            return dup[a] != dup[b] ? dup[b] : jobs_[a].size > jobs_[b].size;
        });
        const std::size_t leaders =
            static_cast<std::size_t>(std::count(dup.begin(), dup.end(), false));
        std::atomic<std::size_t> next{0};
        std::atomic<std::size_t> leaders_done{0};
        std::mutex mu;
        std::condition_variable cv;
        auto worker = [&] {
            for (std::size_t k; (k = next.fetch_add(1)) < order.size();) {
                FileJob& j = jobs_[order[k]];
                if (k >= leaders) {
                    std::unique_lock lk(mu);
                    cv.wait(lk, [&] { return leaders_done == leaders; });
                }
                if (j.error.empty()) {
                    try {
                        if (opts_.move)
                            ingest_move(j);
                        else if ((!dup[order[k]] || !ingest_if_present(j)) &&
                                 !ingest_shared_tensors(j))
                            ingest_copy(j);
                    } catch (const std::exception& e) {
                        j.error = e.what();
                    }
                }
                if (k < leaders) {
                    std::lock_guard lk(mu);
                    if (++leaders_done == leaders) cv.notify_all();
                }
                if (progress_) progress_->done_items += 1;
                // The last file of a model commits it at once, so an interrupted import keeps
                // what it finished and a re-run only redoes the rest.
                if (--remaining_[j.plan] == 0) results_[j.plan] = commit(plans_[j.plan]);
            }
        };
        std::vector<std::jthread> pool;
        for (unsigned i = 1; i < std::min<std::size_t>(n, order.size()); ++i)
            pool.emplace_back(worker);
        worker();
    }

    // Files whose size and sampled fingerprint match a stored blob or an earlier file of this
    // import. Sizes that occur once (and not in the store) cost nothing here.
    std::vector<bool> likely_duplicates() {
        std::vector<bool> dup(jobs_.size());
        std::map<std::uint64_t, std::vector<std::size_t>> by_size;
        for (std::size_t i = 0; i < jobs_.size(); ++i)
            if (jobs_[i].error.empty()) by_size[jobs_[i].size].push_back(i);
        std::map<std::uint64_t, std::vector<Sha256>> stored;
        s_.catalog.read().for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            if (r.state == BlobState::present && by_size.count(r.size)) stored[r.size].push_back(h);
        });
        auto fingerprint = [](const stdfs::path& p, std::uint64_t size,
                              const FileJob* j = nullptr) -> std::optional<Xxh128> {
            UniqueFd fd;
            try {
                fd = j ? open_source(*j) : UniqueFd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
            } catch (const std::exception&) {
                return std::nullopt;
            }
            if (!fd) return std::nullopt;
            try {
                return sample_fingerprint(fd.get(), size);
            } catch (const StoreError&) {
                return std::nullopt;
            }
        };
        for (const auto& [size, idx] : by_size) {
            auto st = stored.find(size);
            if (idx.size() < 2 && st == stored.end()) continue;
            std::set<Xxh128> seen;
            if (st != stored.end())
                for (const auto& h : st->second)
                    if (auto f = fingerprint(s_.blobs.path_of(h), size)) seen.insert(*f);
            for (auto i : idx)
                if (auto f = fingerprint(jobs_[i].src, size, &jobs_[i]);
                    f && !seen.insert(*f).second)
                    dup[i] = true;
        }
        return dup;
    }

    // The one way a source file is opened (safe_open.h when acting for a user).
    static UniqueFd open_source(const FileJob& j) {
        if (!j.as) {
            UniqueFd fd(::open(j.src.c_str(), O_RDONLY | O_CLOEXEC));
            if (!fd) throw_errno("opening " + j.display, errno);
            return fd;
        }
        UniqueFd fd = open_no_symlinks(j.src, O_RDONLY | O_NONBLOCK);
        if (!fd) throw StoreError(ErrorKind::bad_input, open_failure(j.display, errno));
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) throw_errno("reading " + j.display, errno);
        if (!S_ISREG(st.st_mode))
            throw StoreError(ErrorKind::bad_input, j.display + " is not a regular file");
        if (auto why = j.as->refusal(st, j.display)) throw StoreError(ErrorKind::bad_input, *why);
        return fd;
    }

    bool ingest_if_present(FileJob& j) {
        UniqueFd fd = open_source(j);
        auto r = s_.blobs.ingest_if_present(fd.get(), j.display, progress_);
        if (!r) {
            // Not stored after all: the copy reads the file again; keep the bar honest.
            if (progress_) progress_->total_bytes += j.size;
            return false;
        }
        j.result = *r;
        return true;
    }

    // A file sharing tensors with stored blobs: only its new pieces are written.
    bool ingest_shared_tensors(FileJob& j) {
        if (j.size < 2 * kMinSharedBytes) return false;
        UniqueFd fd = open_source(j);
        auto r = ingest_composed(s_, fd.get(), j.display, progress_);
        if (!r) return false;
        j.result = r->ingested;
        if (r->split.composed) j.split = r->split;
        return true;
    }

    void ingest_copy(FileJob& j) {
        UniqueFd fd = open_source(j);
        j.result = s_.blobs.ingest_copy(fd.get(), j.display, progress_);
    }

    // --move: same filesystem -> rename into staging (zero copy), hash there, publish; another
    // filesystem -> copy, verify the copy, and delete the original only after the catalog commit.
    // A journal records the original path until then, so a crash puts the file back.
    void ingest_move(FileJob& j) {
        struct stat src_st, store_st;
        // lstat: a symbolic link is not the store's to take either (its target is copied).
        if (::lstat(j.src.c_str(), &src_st) != 0) throw_errno("reading " + j.display, errno);
        if (::stat(s_.blobs.staging_dir().c_str(), &store_st) != 0)
            throw_errno("reading " + s_.blobs.staging_dir().string(), errno);
        // A file the store may not take (a second hard link, another owner) is copied, and only
        // the name the user gave goes after the commit: the other names keep their file.
        const auto why_not = BlobStore::why_not_take(src_st);
        if (why_not) spdlog::info("{}: copied rather than moved: {}", j.display, *why_not);
        if (src_st.st_dev != store_st.st_dev || why_not || j.as || !move_by_rename(j)) {
            ingest_copy(j);
            verify_copy(j);
            j.delete_source_after_commit = true;
        }
    }

    bool move_by_rename(FileJob& j) {
        const std::string origin = stdfs::absolute(j.src).string();
        // The job owns the journal from the start: whatever fails below, finish_move() (or, after
        // a crash, recover_moves()) finds it and puts the user's file back.
        j.journal = s_.blobs.make_staging(kJournalSuffix);
        stdfs::path moved = stdfs::path(j.journal->path()).replace_extension(kMovedSuffix);
        append_journal(*j.journal, {{"origin", origin}, {"moved", moved.filename().string()}});
        if (::rename(j.src.c_str(), moved.c_str()) != 0) {
            int err = errno;
            j.journal.reset();
            if (err == EXDEV) return false;
            throw_errno("moving " + j.display + " into the store", err);
        }
        j.source_renamed = true;
        fsync_dir(s_.blobs.staging_dir());
        fsync_dir(stdfs::path(origin).parent_path());
        StagingFile staged = s_.blobs.adopt_staging(moved);
        staged.keep();  // a failure must leave it for finish_move() to put back
        // Checked again on what was moved: a link made since the first look would outlive it.
        struct stat st;
        if (::fstat(staged.fd(), &st) != 0) throw_errno("reading " + moved.string(), errno);
        if (auto why = BlobStore::why_not_take(st)) {
            // Never over a file made at the origin meanwhile; the journal recovers it then.
            if (::renameat2(AT_FDCWD, moved.c_str(), AT_FDCWD, j.src.c_str(), RENAME_NOREPLACE) !=
                0)
                throw_errno("putting " + j.display + " back", errno);
            fsync_dir(stdfs::path(origin).parent_path());
            j.source_renamed = false;
            j.journal.reset();
            spdlog::info("{}: copied rather than moved: {}", j.display, *why);
            return false;
        }
        FileDigests d = digest_fd(staged.fd(), progress_, j.display.c_str());
        if (::fchmod(staged.fd(), 0444) != 0) throw_errno("making blob read-only", errno);
        fsync_or_throw(staged.fd(), moved.string());
        append_journal(*j.journal, {{"sha256", d.sha256.hex()}});
        j.result.digests = d;
        // A duplicate stays in staging until the catalog commit; finish_move() removes it.
        settle_unverified(s_, d.sha256);
        j.result.stored_new = s_.blobs.publish(staged, d.sha256, d.size);
        return true;
    }

    // Journals only grow, one JSON line per step: a kill in the middle of a write can cost the
    // newest line, never the origin recorded first.
    static void append_journal(StagingFile& journal, const nlohmann::json& j) {
        std::string text = j.dump() + "\n";
        struct stat st;
        if (::fstat(journal.fd(), &st) != 0) throw_errno("reading move journal", errno);
        pwrite_all(journal.fd(), text.data(), text.size(), static_cast<std::uint64_t>(st.st_size),
                   journal.path().string());
        fsync_or_throw(journal.fd(), journal.path().string());
    }

    void verify_copy(FileJob& j) {
        UniqueFd fd = s_.blobs.open_blob(j.result.digests.sha256);
        if (!fd) throw_errno("re-reading the stored copy of " + j.display, errno);
        if (xxh128_fd(fd.get()) != j.result.digests.xxh128)
            throw StoreError(ErrorKind::corrupt, "the stored copy of " + j.display +
                                                     " does not match what was read; the "
                                                     "original was left in place");
    }

    // After the catalog commit (or its failure) a move is finished: the journal goes; a same-fs
    // duplicate's staged file goes; a cross-fs original is deleted. On failure the user's file is
    // put back where it was.
    void finish_move(FileJob& j, bool committed) {
        stdfs::path moved = j.journal
                                ? stdfs::path(j.journal->path()).replace_extension(kMovedSuffix)
                                : stdfs::path();
        if (committed) {
            if (!moved.empty()) ::unlink(moved.c_str());  // only exists for duplicates
            if (j.delete_source_after_commit && !delete_source(j))
                spdlog::warn("{} was stored but could not be deleted: {}", j.display,
                             std::strerror(errno));
            j.journal.reset();  // unlinks the journal
            return;
        }
        if (!j.source_renamed || !j.journal) return;
        // Put the user's file back: the staged file if it is still there, else a copy of the blob.
        if (::rename(moved.c_str(), j.src.c_str()) == 0) {
            j.journal.reset();
            return;
        }
        std::error_code ec;
        if (restore_from_blob(s_.blobs, j.result.digests.sha256, j.src, ec)) {
            j.journal.reset();
        } else {
            j.journal->keep();  // recovery at the next open will try again
            spdlog::error("could not put {} back after a failed import: {}; its content is blob {}",
                          j.display, ec.message(), j.result.digests.sha256.hex());
        }
    }

    // Acting for a user, the name goes under its folder's fd, reached with no link (a folder
    // swapped for a link since must not make root delete a file of the same name elsewhere).
    static bool delete_source(const FileJob& j) {
        if (!j.as) return ::unlink(j.src.c_str()) == 0;
        UniqueFd dir = open_no_symlinks(j.src.parent_path(), O_PATH | O_DIRECTORY);
        return dir && ::unlinkat(dir.get(), j.src.filename().c_str(), 0) == 0;
    }

    ImportItem commit(ModelPlan& m) {
        ImportItem item;
        item.source = m.source;
        item.files = m.jobs.size();
        item.model_key = m.category ? model_key(*m.category, m.name) : m.name;
        std::string err = m.error;
        for (auto k : m.jobs)
            if (err.empty() && !jobs_[k].error.empty()) err = jobs_[k].error;
        if (err.empty() && m.jobs.empty()) err = m.source.string() + ": folder holds no files";
        if (!err.empty()) return failed(m, item, err);

        ModelVersion v;
        v.added = unix_now();
        v.source = stdfs::absolute(m.source).lexically_normal().string();
        for (std::size_t i = 0; i < m.jobs.size(); ++i) {
            const FileJob& j = jobs_[m.jobs[i]];
            v.size += j.result.digests.size;
            item.new_blob = item.new_blob || j.result.stored_new;
            if (m.tree)
                v.tree.push_back({m.tree_paths[i], j.result.digests.sha256, j.result.digests.size});
        }
        if (!m.tree) {
            v.blob = jobs_[m.jobs[0]].result.digests.sha256;
            v.ext = m.ext;
            item.sha256 = *v.blob;
            item.split = jobs_[m.jobs[0]].split;
        }
        item.size = v.size;
        try {
            auto txn = s_.catalog.write();
            for (auto k : m.jobs) {
                const FileJob& j = jobs_[k];
                auto rec = txn.get_blob(j.result.digests.sha256);
                if (rec && rec->state == BlobState::present) continue;
                BlobRecord r = rec.value_or(BlobRecord{});
                r.size = j.result.digests.size;
                r.state = BlobState::present;
                r.unverified = false;
                r.xxh128 = j.result.digests.xxh128;
                r.safetensors_header_len = j.header ? j.header->header_len : 0;
                r.ingested = r.accessed = unix_now();
                r.seen = s_.blobs.stat_of(j.result.digests.sha256);
                txn.put_blob(j.result.digests.sha256, r);
            }
            Model model;
            if (auto existing = txn.get_model(model_key(*m.category, m.name))) {
                model = std::move(*existing);
            } else {
                model.category = *m.category;
                model.name = m.name;
            }
            const AddedVersion added = model.add_version(v, opts_.version);
            item.label = model.versions[added.index].label;
            if (!added.added)
                item.outcome = ImportItem::Outcome::unchanged;
            else if (model.versions.size() > 1)
                item.outcome = ImportItem::Outcome::new_version;
            txn.put_model(model);
            txn.commit();
        } catch (const std::exception& e) {
            return failed(m, item, m.source.string() + ": " + e.what());
        }
        for (auto k : m.jobs)
            if (opts_.move) finish_move(jobs_[k], true);
        return item;
    }

    ImportItem failed(ModelPlan& m, ImportItem& item, const std::string& err) {
        item.outcome = ImportItem::Outcome::failed;
        item.error = err;
        for (auto k : m.jobs)
            if (opts_.move) finish_move(jobs_[k], false);
        return item;
    }

    Store::Impl& s_;
    const ImportOptions& opts_;
    Progress* progress_;
    std::shared_ptr<const ActingUser> as_;  // for the path being planned
    std::vector<FileJob> jobs_;
    std::vector<ModelPlan> plans_;
    std::vector<std::optional<ImportItem>> results_;         // per plan, filled by commit()
    std::unique_ptr<std::atomic<std::size_t>[]> remaining_;  // files per plan not yet ingested
    ImportReport report_;
};

}  // namespace

bool ImportReport::ok() const {
    return std::none_of(items.begin(), items.end(), [](const ImportItem& i) {
        return i.outcome == ImportItem::Outcome::failed;
    });
}

ImportReport Store::import(const std::vector<stdfs::path>& paths, const ImportOptions& opts,
                           Progress* progress) {
    if (opts.version) check_version_label(*opts.version);
    ImportReport rep = Importer(*impl_, opts, progress).run(paths);
    // New single files that share tensors with stored blobs are composed (tensor_split.h). A
    // failed split leaves the file whole, which is always valid.
    for (auto& item : rep.items) {
        if (!item.new_blob || item.files != 1 || item.outcome == ImportItem::Outcome::failed ||
            item.split)  // composed as it was read
            continue;
        try {
            // The same content as a composed blob: the whole copy just written is not needed.
            auto rec = impl_->catalog.read().get_blob(item.sha256);
            if (rec && rec->composed()) {
                drop_materialised(item.sha256);
                item.new_blob = false;
                continue;
            }
            item.split = split_tensors(item.sha256);
        } catch (const std::exception& e) {
            spdlog::warn("{}: kept whole; splitting it into tensors failed: {}",
                         item.source.string(), e.what());
        }
    }
    return rep;
}

// A move journal whose writer is gone: put the user's file back unless the catalog already has it.
void recover_moves(Store::Impl& s) {
    std::error_code ec;
    for (stdfs::directory_iterator it(s.blobs.staging_dir(), ec), end; !ec && it != end;
         it.increment(ec)) {
        const stdfs::path p = it->path();
        if (p.extension() != kJournalSuffix) continue;
        StagingFile journal;
        try {
            journal = s.blobs.adopt_staging(p);
        } catch (const StoreError&) {
            continue;  // locked: the move is still running
        }
        nlohmann::json j = nlohmann::json::object();
        {
            std::ifstream in(p);
            for (std::string line; std::getline(in, line);) {
                auto step = nlohmann::json::parse(line, nullptr, false);
                if (step.is_object()) j.update(step);  // a torn last line is ignored
            }
        }
        if (!j.contains("origin")) {
            // Empty: the crash came before the move. A young one may instead belong to a writer
            // between creating and locking it; leave that to a later run.
            if (stdfs::file_time_type::clock::now() - stdfs::last_write_time(p, ec) <
                std::chrono::minutes(5))
                journal.keep();
            continue;
        }
        stdfs::path origin = j["origin"].is_string() ? j["origin"].get<std::string>() : "";
        std::string moved_name = j.contains("moved") && j["moved"].is_string()
                                     ? j["moved"].get<std::string>()
                                     : std::string();
        // Only ever a plain file name in staging/: a damaged journal must not make us rename
        // the staging folder itself (or anything else) over the user's path.
        if (origin.empty() || !origin.is_absolute() || moved_name.empty() ||
            moved_name.find('/') != std::string::npos || moved_name == "." || moved_name == "..") {
            journal.keep();
            spdlog::error("cannot replay damaged move journal {}; left in place", p.string());
            continue;
        }
        stdfs::path moved = s.blobs.staging_dir() / moved_name;
        bool restored = false;
        if (stdfs::is_regular_file(stdfs::symlink_status(moved, ec))) {
            stdfs::path dest = origin;
            if (stdfs::exists(dest, ec)) dest += ".modelfs-recovered";
            restored = ::rename(moved.c_str(), dest.c_str()) == 0;
            if (restored)
                spdlog::warn("an interrupted import was undone: {} is back", dest.string());
        } else if (stdfs::exists(origin, ec)) {
            restored = true;  // killed before the rename, or already put back: nothing to undo
        } else if (auto sha = Sha256::from_hex(j.value("sha256", std::string()))) {
            bool catalogued = false;
            s.catalog.read().for_each_model([&](const Model& m) {
                for (const auto& v : m.versions)
                    if (v.blob == *sha && v.source == origin.string()) catalogued = true;
            });
            if (catalogued) {
                restored = true;
            } else if (s.blobs.exists(*sha)) {
                restored = restore_from_blob(s.blobs, *sha, origin, ec);
                if (restored)
                    spdlog::warn("an interrupted import was undone: {} is back", origin.string());
            }
        }
        if (!restored) {
            journal.release();
            spdlog::error("could not undo an interrupted move of {}; see {}", origin.string(),
                          p.string());
        }
        // journal's destructor removes it when restored
    }
}

}  // namespace modelfs
