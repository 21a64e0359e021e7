#pragma once

// What multipath.cc and multipath_control.cc share; not part of the core's interface.

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/core/multipath.h"

namespace umpath {

inline std::string AnaText(const PathStateWord& w) {
  return absl::StrCat(nvme::AnaStateName(w.ana), w.ana_pending ? ",ana-pending" : "",
                      w.ready ? "" : ",not-ready", w.admin_failed ? ",failed" : "");
}

// Holds mu_; on release, runs the backend calls queued while it was held.
class ABSL_SCOPED_LOCKABLE Multipath::Locked {
 public:
  explicit Locked(Multipath* m) ABSL_EXCLUSIVE_LOCK_FUNCTION(m->mu_) : m_(m) { m_->mu_.Lock(); }
  ~Locked() ABSL_UNLOCK_FUNCTION() {
    std::vector<absl::AnyInvocable<void()>> calls;
    calls.swap(m_->after_unlock_);
    m_->mu_.Unlock();
    for (auto& c : calls) c();
  }

 private:
  Multipath* const m_;
};

}  // namespace umpath
