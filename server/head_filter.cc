#include "server/head_filter.h"

#include <cctype>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "agent/base/error_reason.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "server/convert.h"

namespace umpath::server {

namespace {

using google::protobuf::FieldDescriptor;

// Grammar (AIP-160; OR binds tighter than AND, and juxtaposition is AND):
//   expression  = sequence { "AND" sequence }
//   sequence    = factor { factor }
//   factor      = term { "OR" term }
//   term        = [ "NOT" | "-" ] simple
//   simple      = "(" expression ")" | field comparator value
//   comparator  = "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
constexpr int kMaxDepth = 32;

enum class Op { kEq, kNe, kLt, kLe, kGt, kGe, kHas };

struct Token {
  enum Kind { kEnd, kLParen, kRParen, kOp, kString, kText } kind = kEnd;
  std::string text;  // a string's value unquoted; a word; an operator
  size_t at = 0;     // byte offset, for errors
  bool quoted = false;
};

bool WordChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '/' || c == '*' ||
         c == '-' || c == '+' || c == '@';
}

absl::Status ErrorAt(size_t at, absl::string_view what) {
  return WithReason(absl::InvalidArgumentError(absl::StrCat("filter_expression at byte ", at, ": ", what)),
                    reason::kInvalidFilter, {{"offset", absl::StrCat(at)}});
}

absl::StatusOr<std::vector<Token>> Lex(absl::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
      continue;
    }
    Token t;
    t.at = i;
    if (c == '(' || c == ')') {
      t.kind = c == '(' ? Token::kLParen : Token::kRParen;
      ++i;
    } else if (c == '=' || c == ':') {
      t.kind = Token::kOp;
      t.text = std::string(1, c);
      ++i;
    } else if (c == '!' || c == '<' || c == '>') {
      t.kind = Token::kOp;
      const bool eq = i + 1 < s.size() && s[i + 1] == '=';
      if (c == '!' && !eq) return ErrorAt(i, "'!' is only part of '!='; negation is NOT or -");
      t.text = std::string(s.substr(i, eq ? 2 : 1));
      i += eq ? 2 : 1;
    } else if (c == '"') {
      t.kind = Token::kString;
      t.quoted = true;
      ++i;
      bool closed = false;
      while (i < s.size()) {
        if (s[i] == '\\' && i + 1 < s.size()) {
          t.text.push_back(s[i + 1]);
          i += 2;
        } else if (s[i] == '"') {
          closed = true;
          ++i;
          break;
        } else {
          t.text.push_back(s[i++]);
        }
      }
      if (!closed) return ErrorAt(t.at, "a string without its closing quote");
    } else if (WordChar(c)) {
      t.kind = Token::kText;
      while (i < s.size() && WordChar(s[i])) t.text.push_back(s[i++]);
    } else {
      return ErrorAt(i, absl::StrCat("unexpected character '", absl::CHexEscape(s.substr(i, 1)),
                                     "' (a value with it goes in double quotes)"));
    }
    out.push_back(std::move(t));
  }
  Token end;
  end.at = s.size();
  out.push_back(end);
  return out;
}

}  // namespace

struct HeadFilterExpression::Node {
  enum Kind { kAnd, kOr, kNot, kCompare } kind = kCompare;
  std::vector<std::shared_ptr<const Node>> children;
  // kCompare:
  const FieldDescriptor* field = nullptr;
  Op op = Op::kEq;
  bool presence = false;     // field:*
  bool prefix = false;       // a string value ending in '*'
  bool fold_case = false;    // identities: nguid, eui64, uuid
  std::string text;          // strings (folded when fold_case), and path ids
  uint64_t number = 0;
  bool boolean = false;
  int enum_number = 0;

  bool Eval(const v1::Head& h) const;
  bool Compare(const v1::Head& h) const;
};

namespace {

const char* const kFieldList =
    "name, uid, subsystem_nqn, nsid, nguid, eui64, uuid, export_device, volume, io_policy, "
    "delayed_removal_secs, io_fail_timeout_secs, removal_pending, failing_fast, live_paths, "
    "selectable_paths, waiting_ios, paths, size_blocks, block_size";

template <typename T>
int Cmp(const T& a, const T& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

bool Holds(Op op, int cmp) {
  switch (op) {
    case Op::kEq:
    case Op::kHas: return cmp == 0;
    case Op::kNe: return cmp != 0;
    case Op::kLt: return cmp < 0;
    case Op::kLe: return cmp <= 0;
    case Op::kGt: return cmp > 0;
    case Op::kGe: return cmp >= 0;
  }
  return false;
}

// The id at the end of a resource name: heads/x -> x, heads/x/paths/nvme0 -> nvme0.
absl::string_view LastSegment(absl::string_view name) {
  const size_t slash = name.rfind('/');
  return slash == absl::string_view::npos ? name : name.substr(slash + 1);
}

bool StringMatches(const HeadFilterExpression::Node& n, std::string value) {
  if (n.fold_case) absl::AsciiStrToLower(&value);
  if (n.presence) return n.op == Op::kNe ? value.empty() : !value.empty();
  if (n.prefix) {
    const bool starts = absl::StartsWith(value, n.text);
    return n.op == Op::kNe ? !starts : starts;
  }
  return Holds(n.op, Cmp(value, n.text));
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  absl::StatusOr<std::shared_ptr<const HeadFilterExpression::Node>> Parse() {
    auto root = Expression(0);
    if (!root.ok()) return root.status();
    if (Peek().kind != Token::kEnd) return ErrorAt(Peek().at, "expected AND, OR or the end");
    return root;
  }

 private:
  using NodeP = std::shared_ptr<const HeadFilterExpression::Node>;
  using Node = HeadFilterExpression::Node;

  const Token& Peek() const { return t_[i_]; }
  bool IsWord(absl::string_view w) const { return Peek().kind == Token::kText && Peek().text == w; }
  const Token& Next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }

  static NodeP Join(Node::Kind kind, std::vector<NodeP> parts) {
    if (parts.size() == 1) return parts[0];
    auto n = std::make_shared<Node>();
    n->kind = kind;
    n->children = std::move(parts);
    return n;
  }

  // One or more of `one`, joined by `kind`, for as long as `more` says another follows.
  template <typename One, typename More>
  static absl::StatusOr<NodeP> Several(Node::Kind kind, One one, More more) {
    std::vector<NodeP> parts;
    do {
      absl::StatusOr<NodeP> p = one();
      if (!p.ok()) return p.status();
      parts.push_back(*std::move(p));
    } while (more());
    return Join(kind, std::move(parts));
  }
  bool Consumed(absl::string_view word) { return IsWord(word) && (Next(), true); }

  absl::StatusOr<NodeP> Expression(int depth) {
    if (depth > kMaxDepth) return ErrorAt(Peek().at, absl::StrCat("nested deeper than ", kMaxDepth));
    return Several(Node::kAnd, [&] { return Sequence(depth); }, [&] { return Consumed("AND"); });
  }

  absl::StatusOr<NodeP> Sequence(int depth) {
    return Several(Node::kAnd, [&] { return Factor(depth); }, [&] {
      return Peek().kind == Token::kLParen || (Peek().kind == Token::kText && !IsWord("AND"));
    });
  }

  absl::StatusOr<NodeP> Factor(int depth) {
    return Several(Node::kOr, [&] { return Term(depth); }, [&] { return Consumed("OR"); });
  }

  absl::StatusOr<NodeP> Term(int depth) {
    bool negate = false;
    if (IsWord("NOT")) {
      Next();
      negate = true;
    } else if (Peek().kind == Token::kText && absl::StartsWith(Peek().text, "-")) {
      // -field=value: the word's rest is the field.
      t_[i_].text.erase(0, 1);
      t_[i_].at += 1;
      negate = true;
      if (t_[i_].text.empty()) return ErrorAt(Peek().at, "expected a field after '-'");
    }
    auto s = Simple(depth);
    if (!s.ok() || !negate) return s;
    auto n = std::make_shared<Node>();
    n->kind = Node::kNot;
    n->children.push_back(*s);
    return NodeP(n);
  }

  absl::StatusOr<NodeP> Simple(int depth) {
    if (Peek().kind == Token::kLParen) {
      Next();
      auto e = Expression(depth + 1);
      if (!e.ok()) return e.status();
      if (Peek().kind != Token::kRParen) return ErrorAt(Peek().at, "expected ')'");
      Next();
      return e;
    }
    return Restriction();
  }

  absl::StatusOr<NodeP> Restriction() {
    const Token field = Next();
    if (field.kind != Token::kText || field.text == "AND" || field.text == "OR") {
      return ErrorAt(field.at, field.kind == Token::kEnd ? "expected a field, found the end"
                                                         : "expected a field (such as nguid)");
    }
    const google::protobuf::Descriptor* d = v1::Head::descriptor();
    const FieldDescriptor* f = d->FindFieldByName(field.text);
    if (f == nullptr) f = d->FindFieldByCamelcaseName(field.text);
    const bool usable = f != nullptr && (f->name() == "paths" || (!f->is_repeated() &&
                                                                  f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE));
    if (!usable) {
      return ErrorAt(field.at, absl::StrCat("no field \"", field.text.substr(0, 64), "\" to filter on; fields: ",
                                            kFieldList));
    }
    const Token op = Next();
    if (op.kind != Token::kOp) {
      return ErrorAt(op.at, absl::StrCat("expected a comparison (=, !=, <, <=, >, >=, :) after ", f->name()));
    }
    const Token value = Next();
    if (value.kind != Token::kText && value.kind != Token::kString) {
      return ErrorAt(value.at, absl::StrCat("expected a value for ", f->name()));
    }
    auto n = std::make_shared<Node>();
    n->field = f;
    n->op = op.text == "=" ? Op::kEq : op.text == "!=" ? Op::kNe : op.text == "<" ? Op::kLt
          : op.text == "<=" ? Op::kLe : op.text == ">" ? Op::kGt : op.text == ">=" ? Op::kGe : Op::kHas;
    if (absl::Status s = Type(n.get(), value); !s.ok()) return s;
    return NodeP(n);
  }

  static absl::Status Type(Node* n, const Token& value) {
    const FieldDescriptor* f = n->field;
    const bool ordering = n->op != Op::kEq && n->op != Op::kNe && n->op != Op::kHas;
    const std::string& v = value.text;
    if (f->name() == "paths") {
      if (n->op != Op::kHas && n->op != Op::kEq && n->op != Op::kNe) {
        return ErrorAt(value.at, "paths takes :, = or != with a path's name (paths:\"nvme0\")");
      }
      n->presence = v == "*";
      n->prefix = !n->presence && absl::EndsWith(v, "*");
      n->text = std::string(LastSegment(n->prefix ? absl::string_view(v).substr(0, v.size() - 1) : v));
      return absl::OkStatus();
    }
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING: {
        n->fold_case = f->name() == "nguid" || f->name() == "eui64" || f->name() == "uuid";
        n->presence = v == "*" && !ordering;  // field:* or = "*": has one; != "*": has none
        if (n->presence) return absl::OkStatus();
        if (n->op == Op::kHas) n->op = Op::kEq;
        n->prefix = absl::EndsWith(v, "*") && !ordering;
        n->text = n->prefix ? v.substr(0, v.size() - 1) : v;
        if (n->fold_case) absl::AsciiStrToLower(&n->text);
        if (f->name() == "name" && !absl::StartsWith(n->text, "heads/")) n->text = absl::StrCat("heads/", n->text);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_UINT32:
      case FieldDescriptor::CPPTYPE_UINT64:
        if (n->op == Op::kHas) n->op = Op::kEq;
        if (value.quoted || !absl::SimpleAtoi(v, &n->number)) {
          return ErrorAt(value.at, absl::StrCat(f->name(), " is a number, not \"", v.substr(0, 64), "\""));
        }
        return absl::OkStatus();
      case FieldDescriptor::CPPTYPE_BOOL: {
        if (n->op == Op::kHas) n->op = Op::kEq;
        const std::string lower = absl::AsciiStrToLower(v);
        if (ordering || (lower != "true" && lower != "false")) {
          return ErrorAt(value.at, absl::StrCat(f->name(), " is true or false, with = or !="));
        }
        n->boolean = lower == "true";
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        if (n->op == Op::kHas) n->op = Op::kEq;
        // IO_POLICY_ROUND_ROBIN, round_robin or round-robin.
        std::string upper = absl::AsciiStrToUpper(absl::StrReplaceAll(v, {{"-", "_"}}));
        const google::protobuf::EnumDescriptor* e = f->enum_type();
        const google::protobuf::EnumValueDescriptor* ev = e->FindValueByName(upper);
        if (ev == nullptr) ev = e->FindValueByName(absl::StrCat("IO_POLICY_", upper));
        if (ordering || ev == nullptr) {
          std::vector<std::string> names;
          for (int i = 1; i < e->value_count(); ++i) names.push_back(e->value(i)->name());
          return ErrorAt(value.at, absl::StrCat(f->name(), " is one of ", absl::StrJoin(names, ", "), ", with = or !="));
        }
        n->enum_number = ev->number();
        return absl::OkStatus();
      }
      default:
        return ErrorAt(value.at, absl::StrCat(f->name(), " cannot be filtered on"));
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
};

}  // namespace

bool HeadFilterExpression::Node::Eval(const v1::Head& h) const {
  switch (kind) {
    case kAnd:
      for (const auto& c : children) {
        if (!c->Eval(h)) return false;
      }
      return true;
    case kOr:
      for (const auto& c : children) {
        if (c->Eval(h)) return true;
      }
      return false;
    case kNot: return !children[0]->Eval(h);
    case kCompare: return Compare(h);
  }
  return false;
}

bool HeadFilterExpression::Node::Compare(const v1::Head& h) const {
  if (field->name() == "paths") {
    bool any = false;
    for (const v1::Path& p : h.paths()) {
      const std::string id(LastSegment(p.name()));
      any = any || presence || (prefix ? absl::StartsWith(id, text) : id == text);
    }
    return op == Op::kNe ? !any : any;
  }
  const google::protobuf::Reflection* r = h.GetReflection();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING: return StringMatches(*this, r->GetString(h, field));
    case FieldDescriptor::CPPTYPE_UINT32: return Holds(op, Cmp<uint64_t>(r->GetUInt32(h, field), number));
    case FieldDescriptor::CPPTYPE_UINT64: return Holds(op, Cmp<uint64_t>(r->GetUInt64(h, field), number));
    case FieldDescriptor::CPPTYPE_BOOL: return Holds(op, Cmp(r->GetBool(h, field), boolean));
    case FieldDescriptor::CPPTYPE_ENUM: return Holds(op, Cmp(r->GetEnumValue(h, field), enum_number));
    default: return false;
  }
}

absl::StatusOr<HeadFilterExpression> HeadFilterExpression::Parse(absl::string_view text) {
  if (text.size() > kMaxFilterBytes) {
    return WithReason(absl::InvalidArgumentError(absl::StrCat("filter_expression is ", text.size(),
                                                             " bytes; at most ", kMaxFilterBytes)),
                      reason::kFieldTooLong,
                      {{"field", "filter_expression"}, {"maxBytes", absl::StrCat(kMaxFilterBytes)}});
  }
  HeadFilterExpression out;
  auto tokens = Lex(text);
  if (!tokens.ok()) return tokens.status();
  if (tokens->size() == 1) return out;  // blank: everything
  auto root = Parser(std::move(*tokens)).Parse();
  if (!root.ok()) return root.status();
  out.root_ = std::move(*root);
  return out;
}

bool HeadFilterExpression::Matches(const v1::Head& head) const { return root_ == nullptr || root_->Eval(head); }

bool HeadFilterExpression::Matches(const HeadInfo& head) const {
  if (root_ == nullptr) return true;
  v1::Head p;
  ToProto(head, &p);
  return root_->Eval(p);
}

}  // namespace umpath::server
