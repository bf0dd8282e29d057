// hf:// sources against a local stand-in for the Hugging Face hub: an nginx that answers
// /OWNER/REPO/resolve/REVISION/PATH only with the right bearer token, and redirects LFS files to
// a "CDN" path with the X-Linked-Etag / X-Linked-Size headers the hub sends.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "fetch_env.h"
#include "modelfs/fetch/fetcher.h"
#include "modelfs/fetch/probe.h"
#include "modelfs/store/errors.h"
#include "support/http_servers.h"

namespace modelfs::test {
namespace {

using namespace std::chrono_literals;

std::uint16_t free_port() {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(s);
    return ntohs(a.sin_port);
}

bool can_connect(std::uint16_t port) {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(s);
    return ok;
}

class FakeHub {
  public:
    // Serves `www`/cdn/<name> as hf://org/model/<name> (revision main or rev1) to `token`.
    FakeHub(const std::filesystem::path& www, const std::string& token,
            const std::string& linked_sha, std::uint64_t linked_size) {
        port_ = free_port();
        auto d = dir_.path();
        std::ofstream conf(d / "nginx.conf");
        conf << "daemon off;\nmaster_process off;\nworker_processes 1;\npid "
             << (d / "nginx.pid").string() << ";\nerror_log " << (d / "error.log").string()
             << ";\nevents {}\nhttp {\n"
             << "  access_log " << (d / "access.log").string() << ";\n"
             << "  client_body_temp_path " << d.string() << ";\n"
             << "  proxy_temp_path " << d.string() << ";\n"
             << "  server {\n    listen 127.0.0.1:" << port_ << ";\n"
             << "    root " << www.string() << ";\n"
             << "    location ~ ^/org/model/resolve/(main|rev1)/(.*)$ {\n"
             << "      if ($http_authorization != \"Bearer " << token << "\") { return 401; }\n"
             << "      add_header X-Linked-Etag '\"" << linked_sha << "\"' always;\n"
             << "      add_header X-Linked-Size " << linked_size << " always;\n"
             << "      return 302 /cdn/$2;\n    }\n"
             << "  }\n}\n";
        conf.close();
        proc_ =
            ChildProcess("/usr/sbin/nginx", {"-c", (d / "nginx.conf").string(), "-p", d.string()},
                         d / "stderr", false);
        for (int i = 0; i < 200 && !can_connect(port_); ++i) std::this_thread::sleep_for(10ms);
    }
    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
    std::size_t cdn_gets() const {
        std::ifstream in(dir_.path() / "access.log");
        std::size_t n = 0;
        for (std::string line; std::getline(in, line);)
            if (line.find("GET /cdn/") != std::string::npos) ++n;
        return n;
    }

  private:
    modelfs::testing::TempDir dir_{"modelfs-hub"};
    std::uint16_t port_ = 0;
    ChildProcess proc_;
};

class HfTest : public FetchEnv {};

TEST_F(HfTest, DownloadsWithTheTokenThroughTheRedirect) {
    const std::uint64_t size = 1'500'000;
    Sha256 h = make_file("cdn/unet/w.safetensors", size, 61);
    FakeHub hub(www(), "hf_good", h.hex(), size);

    auto cfg = fast_config();
    cfg.hf_endpoint = hub.endpoint();
    cfg.hf_token = "hf_good";
    auto info = fetch::probe("hf://org/model@rev1/unet/w.safetensors", cfg);
    ASSERT_TRUE(info.sha256);
    EXPECT_EQ(*info.sha256, h);
    EXPECT_EQ(info.size, size);
    EXPECT_TRUE(info.accepts_ranges);

    add_remote(h, size, {"hf://org/model@rev1/unet/w.safetensors"});
    fetch::Fetcher f(store(), cfg);
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("cdn/unet/w.safetensors")));
    EXPECT_GE(hub.cdn_gets(), 2u);  // ranged, in parallel, from where the hub sent us
}

TEST_F(HfTest, WrongTokenIsRefusedWithAHint) {
    const std::uint64_t size = 1000;
    Sha256 h = make_file("cdn/x.bin", size, 62);
    FakeHub hub(www(), "hf_good", h.hex(), size);
    add_remote(h, size, {"hf://org/model/x.bin"});

    auto cfg = fast_config();
    cfg.hf_endpoint = hub.endpoint();
    cfg.hf_token = "hf_wrong";
    try {
        fetch::probe("hf://org/model/x.bin", cfg);
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::unauthorized);
        EXPECT_NE(std::string(e.what()).find("HF_TOKEN"), std::string::npos);
    }
    fetch::Fetcher f(store(), cfg);
    auto r = f.fetch(h)->wait();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("HF_TOKEN"), std::string::npos) << r.error;
    EXPECT_EQ(hub.cdn_gets(), 0u);
}

}  // namespace
}  // namespace modelfs::test
