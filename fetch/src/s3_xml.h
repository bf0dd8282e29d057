// The few fields S3's XML answers carry that the S3 client needs (<Key>, <Size>, <ETag>,
// <UploadId>, <Code>, ...). S3 writes flat, predictable documents: no namespaces on the elements
// we read, no CDATA, no nesting of an element in one of the same name. So a tag scanner is enough
// and keeps an XML library out of the dependencies; it is careful where it matters: a tag matches
// by its whole name (<Key> is not <KeyMarker>), and text is decoded (the five entities and &#N;).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace modelfs::fetch::detail {

// The raw content of every <tag>...</tag> (or <tag/>, empty) in `xml`, in order, not decoded. An
// element left open (a cut answer) is not returned.
std::vector<std::string_view> xml_elements(std::string_view xml, std::string_view tag);

// Text content with the entities decoded: &amp; &lt; &gt; &quot; &apos;, &#N; and &#xH; (written
// as UTF-8). nullopt for an unknown or malformed entity, or a character reference that is no
// Unicode scalar value.
std::optional<std::string> xml_text(std::string_view raw);

// The decoded text of the first <tag> in `xml`; nullopt when there is none (or it does not
// decode).
std::optional<std::string> xml_field(std::string_view xml, std::string_view tag);

}  // namespace modelfs::fetch::detail
