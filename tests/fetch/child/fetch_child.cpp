// A process that downloads one blob with the Fetcher, for the fetch tests that need a second
// process (kill -9 in the middle, two processes sharing one download).
//
//   modelfs_fetch_child STORE KEYHEX [CHUNK_BYTES [LIMIT_RATE [CONNECTIONS]]]
//
// Prints "started" once the download is under way, then "ok HEX" or "failed MESSAGE"; the exit
// code is 0 on success.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "modelfs/fetch/fetcher.h"
#include "modelfs/store/errors.h"

int main(int argc, char** argv) {
    if (argc < 3) {
        std::cerr << "usage: modelfs_fetch_child STORE KEYHEX [CHUNK [LIMIT_RATE [CONNECTIONS]]]\n";
        return 2;
    }
    try {
        auto store = modelfs::Store::open(argv[1]);
        auto key = modelfs::Sha256::from_hex(argv[2]);
        if (!key) throw std::runtime_error("bad key");
        modelfs::fetch::FetchConfig cfg;
        cfg.backoff_initial = std::chrono::milliseconds(20);
        cfg.stall_timeout = std::chrono::seconds(10);
        if (argc > 3) cfg.chunk_size = std::stoull(argv[3]);
        if (argc > 4) cfg.limit_rate = std::stoull(argv[4]);
        if (argc > 5) cfg.connections_per_blob = static_cast<unsigned>(std::stoul(argv[5]));
        modelfs::fetch::Fetcher f(store, cfg);
        auto d = f.fetch(*key);
        std::cout << "started" << std::endl;
        auto r = d->wait();
        if (r.ok) {
            std::cout << "ok " << r.blob.hex() << std::endl;
            return 0;
        }
        std::cout << "failed " << r.error << std::endl;
        return 1;
    } catch (const std::exception& e) {
        std::cout << "failed " << e.what() << std::endl;
        return 1;
    }
}
