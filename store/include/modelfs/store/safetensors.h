// Reading and validating safetensors headers: 8-byte little-endian length N, N bytes of JSON,
// then the tensor data. Everything here treats the file as hostile input.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace modelfs {

// Reference readers refuse headers over this size; so do we.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// A malformed or hostile header. The message says what is wrong but not which file: the caller
// adds the path.
class SafetensorsError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct SafetensorsInfo {
    std::uint64_t header_len = 0;  // N, the JSON length
    std::uint64_t tensor_count = 0;
    std::uint64_t parameter_count = 0;            // sum over tensors of the product of the shape
    std::map<std::string, std::uint64_t> dtypes;  // dtype -> number of tensors
    std::map<std::string, std::string> metadata;  // __metadata__
    std::vector<std::string> tensor_names;        // sorted
    // Which parts of a Stable Diffusion checkpoint the file carries, by tensor-name prefix.
    bool has_unet = false;          // model.diffusion_model.
    bool has_vae = false;           // first_stage_model.
    bool has_text_encoder = false;  // cond_stage_model. or conditioner.

    // Offset of the first tensor byte; AutoV3 hashes from here to the end of the file.
    std::uint64_t data_offset() const { return 8 + header_len; }
};

// Validates the JSON header of a file of `file_size` bytes: an object; every tensor entry has a
// known dtype, a shape of non-negative integers and data_offsets [begin, end) whose length matches
// dtype and shape; offsets lie inside the data section; tensors neither overlap nor leave holes;
// __metadata__, if present, maps strings to strings. Throws SafetensorsError.
SafetensorsInfo parse_safetensors_header(std::string_view header_json, std::uint64_t file_size);

// Reads and validates the header of an open file. Never reads more than
// kMaxSafetensorsHeaderBytes, whatever the length field claims. Throws SafetensorsError (bad
// content) or std::system_error (I/O).
SafetensorsInfo read_safetensors_header(int fd, std::uint64_t file_size);

// File name extensions whose content must be valid safetensors (".safetensors", ".sft").
bool has_safetensors_extension(std::string_view filename);

}  // namespace modelfs
