// The states and reasons of adopt as values, and the one place each is put into words: a record's
// state and a left file's kind by their names in the record (store/FORMAT.md "Adopted
// installs"), a skip reason and a left file's note by the text the report shows, the source of a
// version adopt catalogued.
#include <tuple>
#include <utility>

#include "modelfs/adopt/adopt.h"
#include "modelfs/store/version_source.h"
#include "util.h"

namespace modelfs::adopt {

namespace {

constexpr std::pair<RecordState, const char*> kStates[] = {
    {RecordState::recorded, "recorded"},
    {RecordState::mounted, "mounted"},
    {RecordState::confirmed, "confirmed"},
    {RecordState::unadopted, "unadopted"},
};

// name in the record, prefix of the note
constexpr std::tuple<Left, const char*, const char*> kLefts[] = {
    {Left::not_adopted, "not_adopted", "not adopted: "},
    {Left::outside, "outside", "left where it is (outside the models folder): "},
    {Left::kept_in_place, "kept_in_place", "kept in place, not in the store: "},
};

}  // namespace

std::string_view state_name(RecordState s) {
    return detail::name_in(kStates, s).value_or("recorded");
}

std::optional<RecordState> parse_state(std::string_view s) {
    return detail::value_in(kStates, s);
}

std::string_view left_name(Left l) {
    return detail::name_in(kLefts, l).value_or("");
}

std::optional<Left> parse_left(std::string_view s) {
    return detail::value_in(kLefts, s);
}

std::string left_note(Left l, const std::string& why) {
    for (auto& [v, n, prefix] : kLefts)
        if (v == l) return prefix + why;
    return why;
}

Left detail::left_of_legacy_note(std::string_view note) {
    for (auto& [v, n, prefix] : kLefts) {
        // Older modelfs tested the words before the colon ("not adopted").
        const std::string_view words(prefix, std::string_view(prefix).size() - 2);
        if (note.starts_with(words)) return v;
    }
    return Left::none;
}

std::string adopt_source(const std::string& tool, const std::string& view_rel) {
    return to_source({SourceKind::adopt, tool, view_rel});
}

std::optional<std::string> adopt_source_tool(std::string_view source) {
    VersionSource s = parse_source(source);
    if (s.kind != SourceKind::adopt) return std::nullopt;
    return std::move(s.tool);
}

std::string skip_text(const Skip& s) {
    switch (s.reason) {
        case SkipReason::none:
            return "";
        case SkipReason::no_view:
            return "no built-in view for tool '" + s.tool + "'";
        case SkipReason::second_install:
            return "a second " + s.tool +
                   " install in one run; adopt one install per tool per store";
        case SkipReason::other_install_adopted:
            return "another " + s.tool + " install (" + s.path.string() +
                   ") is adopted in this store; one install per tool per store (run "
                   "`modelfs unadopt " +
                   s.path.string() + "` first)";
        case SkipReason::already_adopted:
            return "already adopted (" + std::string(state_name(s.state)) + "); `modelfs unadopt " +
                   s.path.string() + "` gives the plain folders back";
        case SkipReason::models_refused:
            return s.detail;
        case SkipReason::models_dir_mounted:
            return s.path.string() +
                   " is already a mount point, without an adoption record; unmount it first";
        case SkipReason::models_dir_link:
            return s.path.string() + " is a link to " + s.link_target.string() +
                   "; adopt needs the real folder there (replace the link by the folder it points "
                   "to)";
    }
    return "";
}

RecordVerdict record_verdict(const Record* rec, const Install& inst, bool models_dir_mounted) {
    RecordVerdict v;
    if (!rec || !holds_install(rec->state)) return v;  // adopted afresh
    if (rec->root != inst.root)
        v.skip = {
            .reason = SkipReason::other_install_adopted, .tool = inst.tool, .path = rec->root};
    else if (rec->state == RecordState::recorded)
        v.resume = true;  // an interrupted run: finish the switch from the record
    else if (!models_dir_mounted)
        v.resume = true;  // adopted, but the view is not mounted (a reboot): mount it
    else
        v.skip = {.reason = SkipReason::already_adopted,
                  .tool = inst.tool,
                  .path = inst.root,
                  .state = rec->state};
    return v;
}

}  // namespace modelfs::adopt
