#pragma once

// How umpathctl prints an answer: tables, or the answer itself as JSON or YAML.

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"

namespace umpath::client {

enum class Format {
  kTable,  // the columns an operator reads
  kWide,   // and the ones for a closer look
  kJson,   // protobuf's JSON mapping (field names as in the .proto)
  kYaml,   // the same document as block YAML
};

// protobuf's JSON mapping, pretty-printed, with zeros and falses (they are answers too).
std::string Json(const google::protobuf::Message& m);

// The document Json gives, as block YAML: strings quoted where YAML would read them as
// something else (numbers, booleans, null, a leading indicator, ": " or " #").
absl::StatusOr<std::string> Yaml(const google::protobuf::Message& m);

// Columns padded to the widest cell; rows[0] is the header, left out with `no_headers`.
void Table(std::ostream& out, const std::vector<std::vector<std::string>>& rows,
           bool no_headers);

}  // namespace umpath::client
