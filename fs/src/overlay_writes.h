// Who may write an overlay file, and when it is finished: the rule that keeps a half-written
// file from becoming a model, across every process that serves the store.
//
// Two marks on the overlay file itself (STORE/views/...), so that they hold across processes and
// survive a crash of the daemon:
//   - flock: every descriptor a mount opens for writing holds LOCK_SH; the ingest takes
//     LOCK_EX|LOCK_NB for the moment it links the file into the store. So bytes enter blobs/ only
//     from an inode no live writer of any mount holds, and a writer that opens it meanwhile
//     waits for that moment to pass, then finds the file gone from its path and opens again.
//   - the xattr `user.modelfs.plain`: set before the first byte is written, to "writing" plus
//     the writer's identity (boot, pid, process start time); removed when the last writer closed
//     without an error. A file still carrying it is not stored: while its writer lives it is
//     busy, and once its writer is gone (the daemon was killed mid-write) it is unfinished and
//     stays a plain file under its own name, with the reason in the same xattr, until it is
//     written again. Reasons for other refusals (an incomplete safetensors file) go there too,
//     so `modelfs status` and getfattr can say why a file at a model path is not a model.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "modelfs/store/unique_fd.h"

namespace modelfs::fs::overlay_writes {

inline constexpr const char* kXattr = "user.modelfs.plain";

// Takes the writer's share of `fd`'s lock (waiting while another process stores the file) and
// marks the file as being written. false: the file at `real` is no longer `fd`'s inode (another
// mount stored it in the meantime); the caller looks the path up again.
bool begin(int fd, const std::filesystem::path& real);

// The last writer of this process is done with the file: `writer` is its descriptor, closed
// here. When no other process writes the file, its mark goes (`error` empty: it may be stored
// now, returns true) or is replaced by `error`, the reason it stays plain.
bool end(UniqueFd writer, const std::string& error);

// What keeps the file out of the store, read from its mark: std::nullopt when nothing does.
// `busy` is set when a live process is writing it (not a reason to report: its close decides).
// A mark whose writer is gone becomes the reason "unfinished", written back when `record`.
std::optional<std::string> held(int fd, bool* busy, bool record = true);

// Records why the file stays a plain file (an ingest refused it). Best effort: a store on a
// filesystem without user xattrs only loses the explanation.
void set_reason(int fd, std::string_view why);

// Why a file with these attributes stays a plain file of its view whatever its path: it belongs
// to another user than the mount's (a user's file in a root mount). The catalog knows one owner
// for every model, the mount's, so storing it would take it from its maker, who could then no
// longer read back a 0600 file, or delete it from a sticky folder. std::nullopt: it may be
// stored.
std::optional<std::string> kept_by_owner(const struct stat& st);

// The file was renamed to `real`: a refusal may not hold for its new name (a file cut off stays
// cut off).
void renamed(const std::filesystem::path& real);

}  // namespace modelfs::fs::overlay_writes
