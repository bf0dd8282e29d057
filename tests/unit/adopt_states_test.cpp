// The states and reasons of adopt as values (modelfs/adopt/adopt.h, adopt/src/states.cpp): a
// record's states and their names in the record, what adopt does with an install given its
// record, the words of each skip reason and left file, and records old and new on disk. No
// mount, no program: the rules themselves.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "modelfs/adopt/adopt.h"
#include "modelfs/store/errors.h"
#include "support/test_env.h"

namespace modelfs::adopt {
namespace {

namespace stdfs = std::filesystem;
using modelfs::testing::TempDir;
using modelfs::testing::write_text_file;

constexpr RecordState kAllStates[] = {RecordState::recorded, RecordState::mounted,
                                      RecordState::confirmed, RecordState::unadopted};

TEST(AdoptStates, NamesAreTheRecordsWordsAndRoundTrip) {
    // store/FORMAT.md, "Adopted installs": "state": "recorded" | "mounted" | "confirmed" |
    // "unadopted".
    EXPECT_EQ(state_name(RecordState::recorded), "recorded");
    EXPECT_EQ(state_name(RecordState::mounted), "mounted");
    EXPECT_EQ(state_name(RecordState::confirmed), "confirmed");
    EXPECT_EQ(state_name(RecordState::unadopted), "unadopted");
    for (auto s : kAllStates) EXPECT_EQ(parse_state(state_name(s)), s);
    EXPECT_FALSE(parse_state("Mounted"));
    EXPECT_FALSE(parse_state(""));
}

TEST(AdoptStates, WhichStatesHoldTheInstallAndWhichAreSwitched) {
    EXPECT_TRUE(holds_install(RecordState::recorded));
    EXPECT_TRUE(holds_install(RecordState::mounted));
    EXPECT_TRUE(holds_install(RecordState::confirmed));
    EXPECT_FALSE(holds_install(RecordState::unadopted));
    // Only a switched install has files that exist nowhere but in the store.
    EXPECT_FALSE(switched(RecordState::recorded));
    EXPECT_TRUE(switched(RecordState::mounted));
    EXPECT_TRUE(switched(RecordState::confirmed));
    EXPECT_FALSE(switched(RecordState::unadopted));
}

Install install_at(const std::string& root) {
    Install i;
    i.tool = "a1111";
    i.root = root;
    i.models_dir = root + "/models";
    return i;
}

Record record_in(RecordState s, const std::string& root) {
    Record r;
    r.id = r.tool = r.view = "a1111";
    r.root = root;
    r.models_dir = root + "/models";
    r.state = s;
    return r;
}

TEST(AdoptStates, NoRecordOrAnUnadoptedOneIsAdoptedAfresh) {
    const Install inst = install_at("/w");
    for (bool mounted : {false, true}) {
        auto v = record_verdict(nullptr, inst, mounted);
        EXPECT_FALSE(v.skip);
        EXPECT_FALSE(v.resume);
        const Record gone = record_in(RecordState::unadopted, "/w");
        v = record_verdict(&gone, inst, mounted);
        EXPECT_FALSE(v.skip);
        EXPECT_FALSE(v.resume);
    }
}

TEST(AdoptStates, ARecordedInstallResumesWhetherOrNotItsViewIsUp) {
    const Record r = record_in(RecordState::recorded, "/w");
    for (bool mounted : {false, true}) {
        auto v = record_verdict(&r, install_at("/w"), mounted);
        EXPECT_FALSE(v.skip);
        EXPECT_TRUE(v.resume);
    }
}

TEST(AdoptStates, AnAdoptedInstallIsMountedAgainOrLeftAlone) {
    for (auto s : {RecordState::mounted, RecordState::confirmed}) {
        const Record r = record_in(s, "/w");
        // After a reboot without the fstab line: mounted again from the record.
        auto down = record_verdict(&r, install_at("/w"), false);
        EXPECT_FALSE(down.skip);
        EXPECT_TRUE(down.resume);
        auto up = record_verdict(&r, install_at("/w"), true);
        EXPECT_FALSE(up.resume);
        EXPECT_EQ(up.skip.reason, SkipReason::already_adopted);
        EXPECT_EQ(skip_text(up.skip), "already adopted (" + std::string(state_name(s)) +
                                          "); `modelfs unadopt /w` gives the plain folders back");
        EXPECT_TRUE(skip_is_ok(up.skip.reason));
    }
}

TEST(AdoptStates, AnotherInstallOfTheToolIsRefusedWhateverItsState) {
    for (auto s : {RecordState::recorded, RecordState::mounted, RecordState::confirmed}) {
        const Record r = record_in(s, "/old");
        for (bool mounted : {false, true}) {
            auto v = record_verdict(&r, install_at("/new"), mounted);
            EXPECT_FALSE(v.resume);
            EXPECT_EQ(v.skip.reason, SkipReason::other_install_adopted);
            EXPECT_EQ(skip_text(v.skip),
                      "another a1111 install (/old) is adopted in this store; one install per "
                      "tool per store (run `modelfs unadopt /old` first)");
            EXPECT_FALSE(skip_is_ok(v.skip.reason));
        }
    }
}

// The words users see (and the CLI tests look for), one reason each; only "already adopted" is
// not a failure.
TEST(AdoptStates, EachSkipReasonHasItsWords) {
    EXPECT_EQ(skip_text({.reason = SkipReason::no_view, .tool = "krita"}),
              "no built-in view for tool 'krita'");
    EXPECT_EQ(skip_text({.reason = SkipReason::second_install, .tool = "comfyui"}),
              "a second comfyui install in one run; adopt one install per tool per store");
    EXPECT_EQ(skip_text({.reason = SkipReason::models_refused, .detail = "/x is outside"}),
              "/x is outside");
    EXPECT_EQ(skip_text({.reason = SkipReason::models_dir_mounted, .path = "/w/models"}),
              "/w/models is already a mount point, without an adoption record; unmount it first");
    EXPECT_EQ(
        skip_text(
            {.reason = SkipReason::models_dir_link, .path = "/w/models", .link_target = "/data"}),
        "/w/models is a link to /data; adopt needs the real folder there (replace the link "
        "by the folder it points to)");
    EXPECT_EQ(skip_text({}), "");
    for (auto r :
         {SkipReason::no_view, SkipReason::second_install, SkipReason::other_install_adopted,
          SkipReason::models_refused, SkipReason::models_dir_mounted, SkipReason::models_dir_link})
        EXPECT_FALSE(skip_is_ok(r));
    EXPECT_FALSE(Skip{});
    EXPECT_TRUE(Skip{.reason = SkipReason::no_view});
}

TEST(AdoptStates, LeftFilesNotesAndNames) {
    EXPECT_EQ(left_note(Left::not_adopted, "/w/models/x: broken link"),
              "not adopted: /w/models/x: broken link");
    EXPECT_EQ(left_note(Left::outside, "/d/x: broken link"),
              "left where it is (outside the models folder): /d/x: broken link");
    EXPECT_EQ(left_note(Left::kept_in_place, "plain file outside the models folder"),
              "kept in place, not in the store: plain file outside the models folder");
    for (auto l : {Left::not_adopted, Left::outside, Left::kept_in_place})
        EXPECT_EQ(parse_left(left_name(l)), l);
    EXPECT_FALSE(parse_left(""));
}

RecordFile left_file(const std::string& path, Left how, const std::string& why) {
    RecordFile f;
    f.path = f.real = path;
    f.kind = ScannedFile::Kind::broken_link;
    f.action = Action::left;
    f.left = how;
    f.note = left_note(how, why);
    return f;
}

TEST(AdoptStates, ARecordKeepsItsStateAndHowEachFileWasLeft) {
    TempDir tmp("modelfs-adopt-states");
    Record r = record_in(RecordState::confirmed, "/w");
    r.files.push_back(left_file("/w/models/a", Left::not_adopted, "/w/models/a: broken link"));
    r.files.push_back(left_file("/d/b", Left::outside, "/d/b: broken link"));
    r.files.push_back(left_file("/d/c", Left::kept_in_place, "plain file"));
    RecordFile stored;
    stored.path = stored.real = "/w/models/Lora/x.safetensors";
    stored.kind = ScannedFile::Kind::model;
    stored.action = Action::store;
    r.files.push_back(stored);
    save_record(tmp.path(), r);
    std::ifstream in(adopt_dir(tmp.path()) / "a1111.json");
    const auto j = nlohmann::json::parse(in);
    EXPECT_EQ(j["state"], "confirmed");
    EXPECT_EQ(j["files"][0]["left"], "not_adopted");
    EXPECT_EQ(j["files"][1]["left"], "outside");
    EXPECT_EQ(j["files"][2]["left"], "kept_in_place");
    EXPECT_FALSE(j["files"][3].contains("left"));
    auto back = load_record(tmp.path(), "a1111");
    ASSERT_TRUE(back);
    EXPECT_EQ(back->state, RecordState::confirmed);
    ASSERT_EQ(back->files.size(), 4u);
    EXPECT_EQ(back->files[0].left, Left::not_adopted);
    EXPECT_EQ(back->files[1].left, Left::outside);
    EXPECT_EQ(back->files[2].left, Left::kept_in_place);
    EXPECT_EQ(back->files[3].left, Left::none);
    EXPECT_EQ(back->files[1].note,
              "left where it is (outside the models folder): /d/b: broken link");
}

// A record written before records named how a file was left: read from the note's words, which
// that modelfs tested.
TEST(AdoptStates, AnOlderRecordWithoutLeftStillLoads) {
    TempDir tmp("modelfs-adopt-states");
    stdfs::create_directories(adopt_dir(tmp.path()));
    auto file = [](const std::string& path, const std::string& action, const std::string& note) {
        return nlohmann::json{
            {"path", path}, {"kind", "broken_link"}, {"action", action}, {"note", note}};
    };
    nlohmann::json j = {
        {"modelfs_adopt", 1},
        {"id", "a1111"},
        {"tool", "a1111"},
        {"view", "a1111"},
        {"root", "/w"},
        {"models_dir", "/w/models"},
        {"backup", "/w/models.modelfs-backup"},
        {"mountpoint", "/w/models"},
        {"state", "mounted"},
        {"files",
         {file("/w/models/a", "left", "not adopted: /w/models/a: broken link"),
          file("/d/b", "left", "left where it is (outside the models folder): /d/b: broken link"),
          file("/d/c", "left",
               "kept in place, not in the store: plain file outside the models "
               "folder"),
          file("/w/models/d", "changing", "/w/models/d: changing while adopting"),
          file("/w/models/e", "overlay", "plain file, kept at its path")}}};
    write_text_file(adopt_dir(tmp.path()) / "a1111.json", j.dump());
    auto r = load_record(tmp.path(), "a1111");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, RecordState::mounted);
    ASSERT_EQ(r->files.size(), 5u);
    EXPECT_EQ(r->files[0].left, Left::not_adopted);
    EXPECT_EQ(r->files[1].left, Left::outside);
    EXPECT_EQ(r->files[2].left, Left::kept_in_place);
    EXPECT_EQ(r->files[3].left, Left::none);
    EXPECT_EQ(r->files[4].left, Left::none);
    EXPECT_EQ(r->files[0].note, "not adopted: /w/models/a: broken link");
}

TEST(AdoptStates, AnUnknownStateIsRefusedNamingTheRecord) {
    TempDir tmp("modelfs-adopt-states");
    stdfs::create_directories(adopt_dir(tmp.path()));
    nlohmann::json j = {{"modelfs_adopt", 1},
                        {"id", "a1111"},
                        {"tool", "a1111"},
                        {"view", "a1111"},
                        {"root", "/w"},
                        {"models_dir", "/w/models"},
                        {"backup", "/w/m.backup"},
                        {"mountpoint", "/w/models"},
                        {"state", "switched"},
                        {"files", nlohmann::json::array()}};
    write_text_file(adopt_dir(tmp.path()) / "a1111.json", j.dump());
    try {
        load_record(tmp.path(), "a1111");
        FAIL() << "an unknown state was accepted";
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find("a1111.json"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("'switched'"), std::string::npos) << e.what();
    }
}

// The source a version adopt catalogued names its tool; unadopt reads the tool back from it.
TEST(AdoptStates, AnAdoptedVersionsSourceNamesItsTool) {
    EXPECT_EQ(adopt_source("a1111", "Lora/x.safetensors"), "adopt:a1111:Lora/x.safetensors");
    EXPECT_EQ(adopt_source_tool(adopt_source("comfyui", "loras/a:b.safetensors")), "comfyui");
    EXPECT_FALSE(adopt_source_tool("mount:a1111"));
    EXPECT_FALSE(adopt_source_tool("hf-cache:org/repo"));
    EXPECT_FALSE(adopt_source_tool("adopt:a1111"));  // no view path: not adopt's
    EXPECT_FALSE(adopt_source_tool(""));
}

}  // namespace
}  // namespace modelfs::adopt
