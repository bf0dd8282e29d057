// remote add/ls/rm, push, pull: a team store on S3 (store/FORMAT.md "Team remotes").
#include <chrono>
#include <iostream>
#include <thread>

#include "cli.h"
#include "modelfs/fetch/team_store.h"
#include "modelfs/store/team_remote.h"
#include "modelfs/store/text.h"

namespace modelfs::cli {
namespace {

using nlohmann::json;

struct RemoteArgs {
    std::string name, url, endpoint, region, profile;
    bool replace = false;
    bool stream = false;
};

json remote_json(const TeamRemote& r) {
    json j = {{"name", r.name},
              {"url", r.url},
              {"endpoint", r.endpoint},
              {"region", r.region},
              {"profile", r.profile},
              {"added", r.added},
              {"writers", r.pulled.size()},
              {"pulled_at", r.pulled_at}};
    return j;
}

int run_remote_add(const Globals& g, const RemoteArgs& a) {
    TeamRemote r;
    r.name = a.name;
    r.url = a.url;
    r.endpoint = a.endpoint;
    r.region = a.region;
    r.profile = a.profile;
    r.stream = a.stream;
    r.added = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
    try {
        check_remote_name(r.name);
        check_remote_url(r.url);
    } catch (const StoreError& e) {
        throw UsageError(e.what());
    }
    if (!r.endpoint.empty() && !istarts_with(r.endpoint, "http://") &&
        !istarts_with(r.endpoint, "https://"))
        throw UsageError("--endpoint '" + terminal_safe(r.endpoint) +
                         "': expected an http:// or https:// URL");
    if (!r.is_s3() && (!r.endpoint.empty() || !r.region.empty() || !r.profile.empty()))
        throw UsageError("--endpoint, --region and --profile are for s3:// remotes; '" + r.url +
                         "' is a read-only mirror");
    Store s = g.open_store();
    if (a.replace)
        if (auto old = find_team_remote(s, r.name)) r.pulled = old->pulled;
    add_team_remote(s, r, a.replace);
    if (g.json)
        print_json(remote_json(r));
    else if (!g.quiet)
        std::cout << "remote " << r.name << ": " << r.url
                  << (r.is_s3() ? "" : " (read-only mirror)") << "; `modelfs pull " << r.name
                  << "` registers its models"
                  << (r.is_s3() ? ", `modelfs push " + r.name + "` publishes this store's" : "")
                  << "\n";
    return kOk;
}

int run_remote_ls(const Globals& g) {
    Store s = g.open_store();
    const auto remotes = team_remotes(s);
    if (g.json) {
        json out = json::array();
        for (const auto& r : remotes) out.push_back(remote_json(r));
        print_json(out);
        return kOk;
    }
    for (const auto& r : remotes) {
        std::cout << r.name << "\t" << r.url;
        if (!r.endpoint.empty()) std::cout << "  endpoint " << r.endpoint;
        if (!r.region.empty()) std::cout << "  region " << r.region;
        if (!r.profile.empty()) std::cout << "  profile " << r.profile;
        if (!r.is_s3()) std::cout << "  (read-only mirror)";
        if (r.stream) std::cout << "  (streams)";
        if (r.pulled_at)
            std::cout << "  pulled " << format_time(r.pulled_at) << " (" << r.pulled.size()
                      << " writer(s))";
        std::cout << "\n";
    }
    if (remotes.empty() && !g.quiet)
        std::cerr << "modelfs: no remotes; `modelfs remote add NAME s3://BUCKET/PREFIX "
                     "--endpoint URL` adds one\n";
    return kOk;
}

int run_remote_rm(const Globals& g, const std::string& name) {
    Store s = g.open_store();
    if (!remove_team_remote(s, name))
        throw StoreError(ErrorKind::not_found,
                         "no remote '" + terminal_safe(name) + "'; `modelfs remote ls` lists them");
    if (g.json)
        print_json({{"removed", name}});
    else if (!g.quiet)
        std::cout << "removed remote " << name
                  << "; the models pulled from it stay (their downloads need the remote back)\n";
    return kOk;
}

struct PushArgs {
    std::string remote;
    std::vector<std::string> patterns;
    unsigned jobs = 8;
    std::string part_size = "16M";
    bool dry_run = false;
    std::string writer;
};

int run_push(const Globals& g, const PushArgs& a) {
    fetch::PushOptions o;
    o.patterns = a.patterns;
    o.connections = a.jobs ? a.jobs : 1;
    auto part = parse_size(a.part_size);
    if (!part || *part < (5ull << 20) || *part > (5ull << 30))
        throw UsageError("--part-size '" + a.part_size +
                         "': expected a size from 5M to 5G (S3's limits for a part)");
    o.part_size = *part;
    o.dry_run = a.dry_run;
    o.writer = a.writer;
    Store s = g.open_store();
    const TeamRemote r = get_team_remote(s, a.remote);
    const fetch::FetchConfig cfg = fetch_config(g.config());
    fetch::PushReport rep;
    {
        ProgressBar bar(g, "push " + r.name);
        Progress* p = bar.get();
        rep = fetch::push(s, r, o, cfg, [p](std::uint64_t done, std::uint64_t total) {
            p->total_bytes = total;
            p->done_bytes = done;
        });
    }
    for (const auto& w : rep.left_out) std::cerr << "modelfs: warning: left out " << w << "\n";
    if (g.json) {
        print_json({{"remote", r.name},
                    {"writer", rep.writer},
                    {"seq", rep.seq},
                    {"snapshot", rep.unchanged || !a.dry_run ? rep.snapshot.hex() : ""},
                    {"unchanged", rep.unchanged},
                    {"dry_run", a.dry_run},
                    {"models", rep.models},
                    {"versions", rep.versions},
                    {"blobs_uploaded", rep.blobs_uploaded},
                    {"blobs_skipped", rep.blobs_skipped},
                    {"bytes_uploaded", rep.bytes_uploaded},
                    {"resumed_parts", rep.resumed_parts},
                    {"left_out", rep.left_out}});
    } else if (!g.quiet) {
        std::cout << (a.dry_run ? "would push " : "pushed ") << rep.models << " model(s), "
                  << rep.versions << " version(s) to " << r.name << ": " << rep.blobs_uploaded
                  << " blob(s) " << (a.dry_run ? "to upload" : "uploaded") << " ("
                  << human_bytes(rep.bytes_uploaded) << "), " << rep.blobs_skipped
                  << " already there";
        if (rep.resumed_parts) std::cout << ", " << rep.resumed_parts << " part(s) resumed";
        if (!a.dry_run)
            std::cout << (rep.unchanged ? "; the catalogue was up to date"
                                        : "; catalogue " + std::to_string(rep.seq) + " of writer " +
                                              rep.writer + " published");
        std::cout << "\n";
    }
    return rep.left_out.empty() ? kOk : kFailed;
}

void print_pull(const Globals& g, const TeamRemote& r, const fetch::PullResult& res) {
    const PullReport& p = res.report;
    for (const auto& l : p.relabelled) std::cerr << "modelfs: note: " << l << "\n";
    if (g.json) {
        print_json({{"remote", r.name},
                    {"writers", res.writers},
                    {"unchanged", res.unchanged || !p.changed},
                    {"models_added", p.models_added},
                    {"versions_added", p.versions_added},
                    {"current_moved", p.current_moved},
                    {"models_removed", p.models_removed},
                    {"blobs_registered", p.blobs_registered},
                    {"bytes_registered", p.bytes_registered},
                    {"kept", p.kept},
                    {"relabelled", p.relabelled}});
        return;
    }
    if (g.quiet) return;
    if (res.unchanged || !p.changed) {
        std::cout << r.name << ": up to date (" << res.writers << " writer(s))\n";
        return;
    }
    std::cout << r.name << ": " << p.models_added << " model(s) and " << p.versions_added
              << " version(s) added, " << p.current_moved << " current version(s) moved, "
              << p.models_removed << " model(s) removed; " << human_bytes(p.bytes_registered)
              << " to fetch on first use (" << res.writers << " writer(s))\n";
    for (const auto& k : p.kept)
        std::cout << "  kept " << k << ": gone from the remote, but it has versions of its own "
                  << "here or a lock holds it\n";
}

int run_pull(const Globals& g, const std::string& name, bool follow, unsigned interval) {
    Store s = g.open_store();
    const fetch::FetchConfig cfg = fetch_config(g.config());
    TeamRemote r = get_team_remote(s, name);
    print_pull(g, r, fetch::pull(s, r, cfg));
    if (!follow) return kOk;
    if (!g.quiet && !g.json)
        std::cerr << "modelfs: following " << r.name << " every " << interval
                  << " s (Ctrl-C stops)\n";
    for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(interval));
        try {
            r = get_team_remote(s, name);
            auto res = fetch::pull(s, r, cfg, true);
            if (!res.unchanged) print_pull(g, r, res);
        } catch (const StoreError& e) {
            // A remote that is down for a while is no reason to stop following it.
            if (e.kind() == ErrorKind::not_found && !find_team_remote(s, name)) throw;
            std::cerr << "modelfs: warning: " << e.what() << " (trying again in " << interval
                      << " s)\n";
        }
    }
}

}  // namespace

void add_remote_commands(CLI::App& app, Globals& g, Runner& run) {
    auto* remote = app.add_subcommand(
        "remote", "Team remotes: an S3 bucket (or a read-only https mirror) a team's stores share");
    remote->require_subcommand(1);

    auto ra = std::make_shared<RemoteArgs>();
    auto* add =
        remote->add_subcommand("add", "Add a remote: NAME s3://BUCKET[/PREFIX] or https://");
    add->add_option("name", ra->name, "The remote's name here (origin, team, ...)")->required();
    add->add_option("url", ra->url,
                    "s3://BUCKET[/PREFIX], or https://HOST/PATH of a read-only mirror")
        ->required();
    add->add_option("--endpoint", ra->endpoint,
                    "S3 endpoint (Ceph RGW, MinIO: http://host:7480); default: the AWS settings "
                    "(AWS_ENDPOINT_URL_S3, the profile's endpoint_url), else AWS");
    add->add_option("--region", ra->region,
                    "S3 region; default: AWS_REGION, the profile's, else "
                    "us-east-1");
    add->add_option("--profile", ra->profile,
                    "AWS profile in ~/.aws/credentials and config; default: AWS_PROFILE, else "
                    "default. Keys are never stored in the catalog");
    add->add_flag("--replace", ra->replace, "Change an existing remote's URL and settings");
    add->add_flag("--stream", ra->stream,
                  "Let mounts serve a pulled model's bytes as they arrive, before the whole file "
                  "is verified (fast first byte; a file that then fails its hash gives EIO and is "
                  "quarantined). Applies from the next pull");
    add->callback([&g, &run, ra] { run = [&g, ra] { return run_remote_add(g, *ra); }; });

    auto* ls = remote->add_subcommand("ls", "List the remotes");
    ls->callback([&g, &run] { run = [&g] { return run_remote_ls(g); }; });

    auto rm_name = std::make_shared<std::string>();
    auto* rm = remote->add_subcommand("rm", "Forget a remote (models pulled from it stay)");
    rm->add_option("name", *rm_name, "The remote")->required();
    rm->callback(
        [&g, &run, rm_name] { run = [&g, rm_name] { return run_remote_rm(g, *rm_name); }; });

    auto pa = std::make_shared<PushArgs>();
    auto* push = app.add_subcommand(
        "push",
        "Publish this store's models to a remote: each blob once, by SHA-256, then the "
        "catalogue as one snapshot");
    push->add_option("remote", pa->remote, "The remote (`modelfs remote ls`)")->required();
    push->add_option("patterns", pa->patterns,
                     "Only models matching these (as `ls`: category/name or name, * ? [])");
    push->add_option("-j,--jobs", pa->jobs, "Uploads at once (default 8)");
    push->add_option("--part-size", pa->part_size,
                     "Multipart part size, 5M to 5G (default 16M; memory: --jobs x this); larger "
                     "files go in parts");
    push->add_flag("-n,--dry-run", pa->dry_run, "Say what would be uploaded; write nothing");
    push->add_option("--writer", pa->writer,
                     "Publish as this writer id (default: this store's own, made on first push)");
    push->callback([&g, &run, pa] { run = [&g, pa] { return run_push(g, *pa); }; });

    auto pull_name = std::make_shared<std::string>();
    auto follow = std::make_shared<bool>(false);
    auto interval = std::make_shared<unsigned>(30);
    auto* pull = app.add_subcommand(
        "pull",
        "Register a remote's models here (sizes and hashes; bytes are fetched on first "
        "open)");
    pull->add_option("remote", *pull_name, "The remote (`modelfs remote ls`)")->required();
    pull->add_flag(
        "--follow", *follow,
        "Keep running and pull again whenever a writer pushes (mounts show the changes)");
    pull->add_option("--interval", *interval, "Seconds between checks with --follow (default 30)")
        ->check(CLI::Range(1u, 86400u));
    pull->callback([&g, &run, pull_name, follow, interval] {
        run = [&g, pull_name, follow, interval] {
            return run_pull(g, *pull_name, *follow, *interval);
        };
    });
}

}  // namespace modelfs::cli
