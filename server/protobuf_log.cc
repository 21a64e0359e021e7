#include "server/protobuf_log.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "agent/base/mutex.h"
#include "google/protobuf/stubs/logging.h"
#include "server/convert.h"

namespace umpath::server {

namespace {

// Threading: protobuf calls Handler from any thread that parses; one lock, held to
// decide, not to write.
struct Limiter {
  Mutex mu;
  std::function<void(const std::string&)> sink;  // set once, before any parse
  int64_t interval_ns = 0;
  int64_t last_ns ABSL_GUARDED_BY(mu) = 0;
  uint64_t unlogged ABSL_GUARDED_BY(mu) = 0;
};

Limiter& TheLimiter() {
  static Limiter* l = new Limiter();  // never destroyed: threads may log at exit
  return *l;
}

const char* LevelName(google::protobuf::LogLevel level) {
  switch (level) {
    case google::protobuf::LOGLEVEL_INFO: return "INFO";
    case google::protobuf::LOGLEVEL_WARNING: return "WARNING";
    case google::protobuf::LOGLEVEL_ERROR: return "ERROR";
    case google::protobuf::LOGLEVEL_FATAL: return "FATAL";
  }
  return "?";
}

void Handler(google::protobuf::LogLevel level, const char*, int, const std::string& message) {
  Limiter& l = TheLimiter();
  std::string line = absl::StrCat("libprotobuf ", LevelName(level), ": ", QuotePrefix(message, 256));
  if (level != google::protobuf::LOGLEVEL_FATAL) {
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch()).count();
    MutexLock lock(&l.mu);
    if (l.last_ns != 0 && now - l.last_ns < l.interval_ns) {
      ++l.unlogged;
      return;
    }
    if (l.unlogged > 0) absl::StrAppend(&line, " (", l.unlogged, " more since the last line)");
    l.last_ns = now;
    l.unlogged = 0;
  }
  l.sink(line);
}

}  // namespace

void LimitProtobufLog(std::function<void(const std::string&)> sink, int64_t interval_ns) {
  Limiter& l = TheLimiter();
  l.sink = std::move(sink);
  l.interval_ns = interval_ns;
  {
    MutexLock lock(&l.mu);
    l.last_ns = 0;
    l.unlogged = 0;
  }
  google::protobuf::SetLogHandler(&Handler);
}

}  // namespace umpath::server
