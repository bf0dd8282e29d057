// What `modelfs add` must know of each file before registering it: its size, and its SHA-256
// when anyone can tell. The store is asked first (content it holds needs no question), then the
// file's servers, in order; the first that answers counts. Nothing is registered here.
#pragma once

#include <string>
#include <vector>

#include "modelfs/fetch/config.h"
#include "modelfs/store/catalog.h"
#include "modelfs/store/store.h"

namespace modelfs::fetch {

// One file whose servers are to be asked.
struct FileToDescribe {
    RemoteFile* file = nullptr;  // in the caller's RemoteModel, completed in place
    bool size_known = false;
    std::string label;  // "lora/foo" or "diffusers/x: unet/y.safetensors", for messages
    std::string error;  // the servers could not describe it: why, and what to give instead
};

// Whether a file of known size but unknown hash is worth a request: yes for one URL on the
// command line, no for a manifest (80 LoRAs that state their size register without 80 requests).
enum class AskForHash { no, yes };

// The files of `models` that need a server's answer: those of unknown size (size_known[i][k]
// says whether models[i]->files[k].size was given) and, with AskForHash::yes, those of unknown
// hash. A file whose SHA-256 names content the store holds takes its size from the store and is
// never asked (a wrong given size is then refused by Store::add_remote, naming both).
std::vector<FileToDescribe> files_to_ask(const Txn& txn, const std::vector<RemoteModel*>& models,
                                         const std::vector<std::vector<bool>>& size_known,
                                         AskForHash ask_for_hash);

// Asks each file's servers (probe), `jobs` files at once, filling in its size and, where a
// server states it, its SHA-256; or its error. A stated hash or size that the server contradicts
// is an error: one of the two is wrong.
void ask_servers(std::vector<FileToDescribe>& files, const FetchConfig& cfg, unsigned jobs);

}  // namespace modelfs::fetch
