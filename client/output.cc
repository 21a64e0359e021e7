#include "client/output.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <ostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace umpath::client {

namespace {

using google::protobuf::Value;

// Plain scalars YAML 1.1 and 1.2 readers take for something other than a string.
bool ReadsAsNonString(const std::string& s) {
  static const char* const kWords[] = {"true", "false", "yes",   "no",   "on",
                                       "off",  "y",     "n",     "null", "~",
                                       ".nan", ".inf",  "-.inf", "+.inf"};
  const std::string lower = absl::AsciiStrToLower(s);
  for (const char* w : kWords) {
    if (lower == w) return true;
  }
  double d;
  return absl::SimpleAtod(s, &d) || absl::StartsWith(s, "0x") ||
         absl::StartsWith(s, "0o");
}

bool NeedsQuotes(const std::string& s) {
  if (s.empty() || ReadsAsNonString(s)) return true;
  // A leading digit, sign or dot may be a number, a date or a sexagesimal (1:20) to a
  // YAML 1.1 reader: quoted, as are the indicators.
  if (absl::StrContains("-+.0123456789?:,[]{}#&*!|>'\"%@` ", s.front()) ||
      s.back() == ' ' || s.back() == ':') {
    return true;
  }
  if (absl::StrContains(s, ": ") || absl::StrContains(s, " #")) return true;
  return std::any_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
}

std::string Scalar(const std::string& s) {
  if (!NeedsQuotes(s)) return s;
  std::string q = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        q += "\\\"";
        break;
      case '\\':
        q += "\\\\";
        break;
      case '\n':
        q += "\\n";
        break;
      case '\t':
        q += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&q, "\\x%02x", static_cast<unsigned char>(c));
        } else {
          q += c;
        }
    }
  }
  return q + "\"";
}

// A scalar, or the empty collection it is ({} or []); nullopt for one with members.
std::optional<std::string> Inline(const Value& v) {
  switch (v.kind_case()) {
    case Value::kNullValue:
      return "null";
    case Value::kBoolValue:
      return v.bool_value() ? "true" : "false";
    case Value::kNumberValue: {
      const double d = v.number_value();
      if (std::trunc(d) == d && std::fabs(d) < 1e15)
        return absl::StrCat(static_cast<int64_t>(d));
      return absl::StrFormat("%.17g", d);
    }
    case Value::kStringValue:
      return Scalar(v.string_value());
    case Value::kStructValue:
      if (v.struct_value().fields().empty()) return "{}";
      return std::nullopt;
    case Value::kListValue:
      if (v.list_value().values().empty()) return "[]";
      return std::nullopt;
    default:
      return "null";
  }
}

void Emit(std::string* out, const Value& v, int indent);

// The members of a map, in the order the JSON had them sorted (by name: stable output).
void EmitStruct(std::string* out, const google::protobuf::Struct& s, int indent) {
  std::vector<const std::string*> keys;
  for (const auto& [k, unused] : s.fields()) keys.push_back(&k);
  std::sort(keys.begin(), keys.end(), [](auto* a, auto* b) { return *a < *b; });
  for (const std::string* k : keys) {
    const Value& v = s.fields().at(*k);
    out->append(indent, ' ');
    absl::StrAppend(out, Scalar(*k), ":");
    if (std::optional<std::string> one = Inline(v)) {
      absl::StrAppend(out, " ", *one, "\n");
    } else {
      out->append("\n");
      // A list under a key is not indented further: "- " marks it (as kubectl prints).
      Emit(out, v, v.has_list_value() ? indent : indent + 2);
    }
  }
}

void Emit(std::string* out, const Value& v, int indent) {
  if (std::optional<std::string> one = Inline(v)) {
    out->append(indent, ' ');
    absl::StrAppend(out, *one, "\n");
  } else if (v.has_struct_value()) {
    EmitStruct(out, v.struct_value(), indent);
  } else {
    for (const Value& item : v.list_value().values()) {
      out->append(indent, ' ');
      out->append("- ");
      if (std::optional<std::string> one = Inline(item)) {
        absl::StrAppend(out, *one, "\n");
        continue;
      }
      // The item's first line goes after "- ", the rest under it.
      std::string inner;
      Emit(&inner, item, indent + 2);
      out->append(inner.substr(static_cast<size_t>(indent) + 2));
    }
  }
}

}  // namespace

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

absl::StatusOr<std::string> Yaml(const google::protobuf::Message& m) {
  // Through the JSON mapping, so YAML says what JSON says (int64 as strings, enums by
  // name, timestamps in RFC 3339).
  Value tree;
  const auto parsed = google::protobuf::util::JsonStringToMessage(Json(m), &tree);
  if (!parsed.ok()) return absl::InternalError("the JSON mapping did not parse back");
  std::string out = "---\n";
  Emit(&out, tree, 0);
  return out;
}

void Table(std::ostream& out, const std::vector<std::vector<std::string>>& rows,
           bool no_headers) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (size_t n = no_headers ? 1 : 0; n < rows.size(); ++n) {
    const auto& r = rows[n];
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      absl::StrAppend(&line, r[i]);
      if (i + 1 < r.size()) line.append(width[i] - r[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

}  // namespace umpath::client
