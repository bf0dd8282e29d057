// The S3 client's reading of XML answers (fetch/src/s3_xml.h): the input is a server's body.
// Every field the client reads is extracted and decoded; a decoded text must be valid UTF-8 when
// the input is (character references are written as UTF-8).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_input.h"
#include "s3_xml.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace d = modelfs::fetch::detail;
    const std::string_view in = modelfs::fuzz::as_text(data, size);
    for (const char* tag : {"Key", "Size", "ETag", "IsTruncated", "NextContinuationToken",
                            "UploadId", "PartNumber", "Code", "Message", "Contents", "Upload"}) {
        for (std::string_view raw : d::xml_elements(in, tag)) {
            // A non-empty element's content must lie inside the answer (<tag/> is an empty view).
            if (!raw.empty() &&
                (raw.data() < in.data() || raw.data() + raw.size() > in.data() + in.size()))
                std::abort();
            (void)d::xml_text(raw);
        }
        (void)d::xml_field(in, tag);
    }
    return 0;
}
