// Pieces of run.cpp that confirm and unadopt use too.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "modelfs/adopt/adopt.h"
#include "modelfs/store/safe_open.h"

namespace modelfs::adopt::detail {

std::string fstab_line(const Record& r, const std::filesystem::path& store_root);
std::string systemd_unit(const Record& r, const std::filesystem::path& store_root);
int run_capture(const std::vector<std::string>& argv, std::string* err);
void start_mount(const Record& r, const std::filesystem::path& store_root, const RunOptions& opts);
bool stop_mount(const std::filesystem::path& mnt, std::string* why);
std::filesystem::path shown_path(const Record& r, const RecordFile& f);
std::filesystem::path original_path(const Record& r, const RecordFile& f);
// Where an adopted file's bytes live once the plain folder is back: its own path, or for a file
// reached through a link (a folder link's target, a file link in models/) the link's target.
std::filesystem::path own_path(const RecordFile& f);
// Makes `p` a plain file of its own again: a file that is a blob's inode is replaced by a copy of
// itself; the recorded mode and mtime are put back. `overlay_copy`, when it is the same inode as
// `p` (the overlay's hard link of a plain file), is removed.
// Every step goes through fds opened without following links (safe_open.h): a file reached
// through a link now, or (with `as`) one that user may not change, is left untouched and named
// in `refused` (logged when null).
void make_independent(Store& store, const RecordFile& f, const std::filesystem::path& p,
                      const std::filesystem::path& overlay_copy, const ActingUser* as = nullptr,
                      std::vector<std::string>* refused = nullptr);
// Is `p` (not following a final link) the same inode as blob `sha256` (hex)?
bool is_blob_inode(Store& store, const std::string& sha256, const std::filesystem::path& p);
bool is_blob_inode(Store& store, const std::string& sha256, const struct stat& st);
// What `adopt --confirm` deletes from the backup of `r` and frees (FORMAT.md "Saving"); only
// looks when `apply` is false: adopt reports that as what confirm will free.
ConfirmOutcome confirm_walk(Store& store, const Record& r, bool apply);

}  // namespace modelfs::adopt::detail
