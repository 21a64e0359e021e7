#include "agent/handover/state.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace umpath::handover {
namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kMaxControllers = 4096;
constexpr size_t kMaxMappings = 1 << 16;
constexpr size_t kMaxQueues = 64;  // per controller: one per worker

// One line: its kind, then key=value fields (a `why` field takes the rest of the line).
struct Record {
  size_t line = 0;
  std::string kind;
  std::map<std::string, std::string> fields;

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("hand-over line ", line, " (", kind, "): ", what));
  }
  absl::StatusOr<uint64_t> Number(const std::string& key, uint64_t lo, uint64_t hi) const {
    auto it = fields.find(key);
    if (it == fields.end()) return Error(absl::StrCat("no ", key));
    uint64_t v;
    if (!absl::SimpleAtoi(it->second, &v) || v < lo || v > hi) {
      return Error(absl::StrCat(key, "=", it->second.substr(0, 32), " is not a number in ", lo, "..", hi));
    }
    return v;
  }
  // An index of a descriptor or mapping, or -1 ("none").
  absl::StatusOr<int> Index(const std::string& key, size_t count) const {
    auto it = fields.find(key);
    if (it != fields.end() && it->second == "none") return -1;
    if (count == 0) return Error(absl::StrCat(key, " names one of none"));
    absl::StatusOr<uint64_t> v = Number(key, 0, count - 1);
    if (!v.ok()) return v.status();
    return static_cast<int>(*v);
  }
  absl::StatusOr<std::string> Text(const std::string& key, size_t max) const {
    auto it = fields.find(key);
    if (it == fields.end()) return Error(absl::StrCat("no ", key));
    if (it->second.size() > max) return Error(absl::StrCat(key, " is longer than ", max, " bytes"));
    return it->second;
  }
};

absl::StatusOr<std::vector<Record>> Parse(absl::string_view text, absl::string_view first) {
  std::vector<Record> out;
  size_t n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++n;
    Record r;
    r.line = n;
    absl::string_view rest = line;
    const size_t sp = rest.find(' ');
    r.kind = std::string(rest.substr(0, sp));
    rest = sp == absl::string_view::npos ? absl::string_view() : rest.substr(sp + 1);
    while (!rest.empty()) {
      const size_t eq = rest.find('=');
      if (eq == absl::string_view::npos || eq == 0 || eq > rest.find(' ')) {
        return r.Error("a field without key=value");
      }
      const std::string key(rest.substr(0, eq));
      rest = rest.substr(eq + 1);
      size_t end = key == "why" ? rest.size() : std::min(rest.find(' '), rest.size());
      if (!r.fields.emplace(key, std::string(rest.substr(0, end))).second) {
        return r.Error(absl::StrCat(key, " given twice"));
      }
      rest = end < rest.size() ? rest.substr(end + 1) : absl::string_view();
    }
    out.push_back(std::move(r));
  }
  if (out.empty() || out[0].kind != "umpath-handover") {
    return absl::InvalidArgumentError("hand-over: not a hand-over message");
  }
  if (out.size() < 2 || out[1].kind != first) {
    return absl::InvalidArgumentError(absl::StrCat("hand-over: not a ", first, " message"));
  }
  return out;
}

std::string Ring(absl::string_view prefix, const RingPosition& r) {
  return absl::StrCat(" ", prefix, "sq_tail=", r.sq_tail, " ", prefix, "cq_head=", r.cq_head, " ",
                      prefix, "cq_phase=", r.cq_phase ? 1 : 0);
}

absl::StatusOr<RingPosition> RingOf(const Record& r, absl::string_view prefix, uint16_t depth) {
  RingPosition p;
  absl::StatusOr<uint64_t> tail = r.Number(absl::StrCat(prefix, "sq_tail"), 0, depth - 1);
  if (!tail.ok()) return tail.status();
  absl::StatusOr<uint64_t> head = r.Number(absl::StrCat(prefix, "cq_head"), 0, depth - 1);
  if (!head.ok()) return head.status();
  absl::StatusOr<uint64_t> phase = r.Number(absl::StrCat(prefix, "cq_phase"), 0, 1);
  if (!phase.ok()) return phase.status();
  p.sq_tail = static_cast<uint16_t>(*tail);
  p.cq_head = static_cast<uint16_t>(*head);
  p.cq_phase = *phase == 1;
  return p;
}

std::string Index(int i) { return i < 0 ? std::string("none") : absl::StrCat(i); }

// DDDD:BB:DD.F in hexadecimal, nothing else.
bool IsBdf(absl::string_view s) {
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11}) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

}  // namespace

std::string Encode(const Hello& h) {
  return absl::StrCat("umpath-handover\nhello protocol=", h.protocol, " version=", h.version,
                      " workers=", h.workers, " queue_depth=", h.queue_depth, "\n");
}

std::string Encode(const Answer& a) {
  return absl::StrCat("umpath-handover\nanswer adopt=", a.adopt ? 1 : 0, " why=", a.why, "\n");
}

std::string Encode(const State& s) {
  std::string out = absl::StrCat("umpath-handover\nstate container=", Index(s.container_fd), "\n");
  for (const MappingState& m : s.mappings) {
    absl::StrAppend(&out, "mapping iova=", m.iova, " len=", m.len, " fd=", Index(m.fd), "\n");
  }
  for (const ControllerState& c : s.controllers) {
    absl::StrAppend(&out, "controller bdf=", c.bdf, " group=", Index(c.group_fd), " device=",
                    Index(c.device_fd), " admin_sq=", Index(c.admin_sq), " admin_cq=", Index(c.admin_cq),
                    " admin_data=", Index(c.admin_data), " admin_log=", Index(c.admin_log),
                    " admin_depth=", c.admin_depth, Ring("admin_", c.admin), " next_cid=", c.next_cid,
                    " aers=", c.aers, " aer_seq=", c.aer_seq, " max_transfer=", c.max_transfer, "\n");
    for (const QueueState& q : c.queues) {
      absl::StrAppend(&out, "queue qid=", q.qid, " depth=", q.depth, " memory=", Index(q.memory),
                      " vector=", q.vector < 0 ? std::string("none") : absl::StrCat(q.vector),
                      Ring("", q.ring), "\n");
    }
  }
  out += "end\n";
  return out;
}

absl::StatusOr<Hello> DecodeHello(absl::string_view text) {
  absl::StatusOr<std::vector<Record>> rs = Parse(text, "hello");
  if (!rs.ok()) return rs.status();
  const Record& r = (*rs)[1];
  Hello h;
  absl::StatusOr<uint64_t> protocol = r.Number("protocol", 0, 1 << 20);
  if (!protocol.ok()) return protocol.status();
  h.protocol = static_cast<int>(*protocol);
  // A successor of another protocol says only that: its other fields are not ours to read.
  if (h.protocol != kProtocol) return h;
  absl::StatusOr<std::string> version = r.Text("version", 64);
  if (!version.ok()) return version.status();
  h.version = *version;
  absl::StatusOr<uint64_t> workers = r.Number("workers", 1, 64);
  if (!workers.ok()) return workers.status();
  absl::StatusOr<uint64_t> depth = r.Number("queue_depth", 2, 4096);
  if (!depth.ok()) return depth.status();
  h.workers = static_cast<uint32_t>(*workers);
  h.queue_depth = static_cast<uint32_t>(*depth);
  return h;
}

absl::StatusOr<Answer> DecodeAnswer(absl::string_view text) {
  absl::StatusOr<std::vector<Record>> rs = Parse(text, "answer");
  if (!rs.ok()) return rs.status();
  const Record& r = (*rs)[1];
  Answer a;
  absl::StatusOr<uint64_t> adopt = r.Number("adopt", 0, 1);
  if (!adopt.ok()) return adopt.status();
  a.adopt = *adopt == 1;
  absl::StatusOr<std::string> why = r.Text("why", 1024);
  if (!why.ok()) return why.status();
  a.why = *why;
  return a;
}

absl::StatusOr<State> DecodeState(absl::string_view text, size_t fds) {
  absl::StatusOr<std::vector<Record>> rs = Parse(text, "state");
  if (!rs.ok()) return rs.status();
  const std::vector<Record>& records = *rs;
  if (records.back().kind != "end") return absl::InvalidArgumentError("hand-over state: no end line (cut short?)");
  State s;
  std::set<int> fds_used;
  auto use_fd = [&](const Record& r, int fd, absl::string_view what) -> absl::Status {
    if (fd < 0) return r.Error(absl::StrCat("no descriptor for ", what));
    if (!fds_used.insert(fd).second) return r.Error(absl::StrCat("descriptor ", fd, " named twice"));
    return absl::OkStatus();
  };
  absl::StatusOr<int> container = records[1].Index("container", fds);
  if (!container.ok()) return container.status();
  if (absl::Status st = use_fd(records[1], *container, "the container"); !st.ok()) return st;
  s.container_fd = *container;

  // Mappings first (the controllers name them by index), then the controllers.
  size_t i = 2;
  for (; i + 1 < records.size() && records[i].kind == "mapping"; ++i) {
    const Record& r = records[i];
    if (s.mappings.size() == kMaxMappings) return r.Error("too many mappings");
    MappingState m;
    absl::StatusOr<uint64_t> iova = r.Number("iova", 0, (uint64_t{1} << 52) - kPage);
    if (!iova.ok()) return iova.status();
    absl::StatusOr<uint64_t> len = r.Number("len", kPage, uint64_t{1} << 40);
    if (!len.ok()) return len.status();
    if (*iova % kPage || *len % kPage) return r.Error("iova and len must be whole pages");
    absl::StatusOr<int> fd = r.Index("fd", fds);
    if (!fd.ok()) return fd.status();
    if (*fd >= 0) {
      if (absl::Status st = use_fd(r, *fd, "the mapping"); !st.ok()) return st;
    }
    m.iova = *iova;
    m.len = *len;
    m.fd = *fd;
    s.mappings.push_back(m);
  }
  // No two mappings overlap.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const MappingState& m : s.mappings) ranges.emplace_back(m.iova, m.iova + m.len);
  std::sort(ranges.begin(), ranges.end());
  for (size_t k = 1; k < ranges.size(); ++k) {
    if (ranges[k].first < ranges[k - 1].second) {
      return absl::InvalidArgumentError(absl::StrCat("hand-over state: mappings overlap at iova ", ranges[k].first));
    }
  }

  std::set<int> mappings_used;
  auto use_mapping = [&](const Record& r, const std::string& key, bool optional = false) -> absl::StatusOr<int> {
    absl::StatusOr<int> m = r.Index(key, s.mappings.size());
    if (!m.ok()) return m.status();
    if (*m < 0 && optional) return -1;
    if (*m < 0) return r.Error(absl::StrCat("no mapping for ", key));
    if (s.mappings[*m].fd < 0) return r.Error(absl::StrCat(key, " names a mapping whose memory was not passed"));
    if (!mappings_used.insert(*m).second) return r.Error(absl::StrCat("mapping ", *m, " named twice"));
    return *m;
  };
  std::set<std::string> bdfs;
  for (; i + 1 < records.size(); ++i) {
    const Record& r = records[i];
    if (r.kind == "queue") {
      if (s.controllers.empty()) return r.Error("a queue before any controller");
      ControllerState& c = s.controllers.back();
      if (c.queues.size() == kMaxQueues) return r.Error("too many queues");
      QueueState q;
      absl::StatusOr<uint64_t> qid = r.Number("qid", 1, 65534);
      if (!qid.ok()) return qid.status();
      absl::StatusOr<uint64_t> depth = r.Number("depth", 2, 4096);
      if (!depth.ok()) return depth.status();
      absl::StatusOr<int> mem = use_mapping(r, "memory");
      if (!mem.ok()) return mem.status();
      absl::StatusOr<RingPosition> ring = RingOf(r, "", static_cast<uint16_t>(*depth));
      if (!ring.ok()) return ring.status();
      q.qid = static_cast<uint16_t>(*qid);
      for (const QueueState& other : c.queues) {
        if (other.qid == q.qid) return r.Error(absl::StrCat("queue ", q.qid, " given twice"));
      }
      q.depth = static_cast<uint16_t>(*depth);
      q.memory = *mem;
      absl::StatusOr<int> vector = r.Index("vector", 2048);
      if (!vector.ok()) return vector.status();
      q.vector = *vector;
      q.ring = *ring;
      c.queues.push_back(q);
      continue;
    }
    if (r.kind != "controller") return r.Error("not a controller or queue line");
    if (s.controllers.size() == kMaxControllers) return r.Error("too many controllers");
    ControllerState c;
    absl::StatusOr<std::string> bdf = r.Text("bdf", 12);
    if (!bdf.ok()) return bdf.status();
    if (!IsBdf(*bdf)) return r.Error("bdf is not a PCI address");
    if (!bdfs.insert(*bdf).second) return r.Error(absl::StrCat(*bdf, " given twice"));
    c.bdf = *bdf;
    absl::StatusOr<int> group = r.Index("group", fds);
    if (!group.ok()) return group.status();
    if (absl::Status st = use_fd(r, *group, "the group"); !st.ok()) return st;
    absl::StatusOr<int> device = r.Index("device", fds);
    if (!device.ok()) return device.status();
    if (absl::Status st = use_fd(r, *device, "the device"); !st.ok()) return st;
    c.group_fd = *group;
    c.device_fd = *device;
    for (auto [key, field] : {std::pair{"admin_sq", &c.admin_sq}, {"admin_cq", &c.admin_cq},
                              {"admin_data", &c.admin_data}, {"admin_log", &c.admin_log}}) {
      absl::StatusOr<int> m = use_mapping(r, key, field == &c.admin_log);
      if (!m.ok()) return m.status();
      *field = *m;
    }
    absl::StatusOr<uint64_t> depth = r.Number("admin_depth", 2, 4096);
    if (!depth.ok()) return depth.status();
    c.admin_depth = static_cast<uint16_t>(*depth);
    absl::StatusOr<RingPosition> ring = RingOf(r, "admin_", c.admin_depth);
    if (!ring.ok()) return ring.status();
    c.admin = *ring;
    absl::StatusOr<uint64_t> cid = r.Number("next_cid", 0, 65535);
    if (!cid.ok()) return cid.status();
    absl::StatusOr<uint64_t> aers = r.Number("aers", 0, 16);
    if (!aers.ok()) return aers.status();
    absl::StatusOr<uint64_t> seq = r.Number("aer_seq", 0, 65535);
    if (!seq.ok()) return seq.status();
    c.aer_seq = static_cast<uint16_t>(*seq);
    absl::StatusOr<uint64_t> mt = r.Number("max_transfer", kPage, 1 << 20);
    if (!mt.ok()) return mt.status();
    c.next_cid = static_cast<uint16_t>(*cid);
    c.aers = static_cast<uint16_t>(*aers);
    c.max_transfer = static_cast<uint32_t>(*mt);
    s.controllers.push_back(std::move(c));
  }
  if (fds_used.size() != fds) {
    return absl::InvalidArgumentError(absl::StrCat("hand-over state: ", fds, " descriptors came and ",
                                                   fds_used.size(), " are named"));
  }
  return s;
}

}  // namespace umpath::handover
