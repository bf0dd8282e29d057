// Pieces of run.cpp that confirm and unadopt use too.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "modelfs/adopt/adopt.h"

namespace modelfs::adopt::detail {

std::string fstab_line(const Record& r, const std::filesystem::path& store_root);
std::string systemd_unit(const Record& r, const std::filesystem::path& store_root);
int run_capture(const std::vector<std::string>& argv, std::string* err);
void start_mount(const Record& r, const std::filesystem::path& store_root, const RunOptions& opts);
bool stop_mount(const std::filesystem::path& mnt, std::string* why);
std::filesystem::path shown_path(const Record& r, const RecordFile& f);
std::filesystem::path original_path(const Record& r, const RecordFile& f);

}  // namespace modelfs::adopt::detail
