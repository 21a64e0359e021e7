// The AIP-160 head filter on its own: what it accepts, how it binds, what it refuses
// and where it says it went wrong.
#include "server/head_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace umpath::server {
namespace {

using ::testing::HasSubstr;

v1::Head MakeHead(uint32_t nsid, const std::string& nguid, const std::string& device, uint32_t selectable,
                  std::initializer_list<const char*> paths) {
  v1::Head h;
  h.set_name("heads/nguid-" + nguid);
  h.set_subsystem_nqn("nqn.2026-01.io.umpath:vol");
  h.set_nsid(nsid);
  h.set_nguid(nguid);
  h.set_export_device(device);
  h.set_selectable_paths(selectable);
  h.set_io_policy(v1::IO_POLICY_ROUND_ROBIN);
  for (const char* p : paths) h.add_paths()->set_name(h.name() + "/paths/" + p);
  return h;
}

class HeadFilterTest : public ::testing::Test {
 protected:
  bool M(const std::string& expr, const v1::Head& h) {
    absl::StatusOr<HeadFilterExpression> f = HeadFilterExpression::Parse(expr);
    EXPECT_TRUE(f.ok()) << expr << ": " << f.status();
    return f.ok() && f->Matches(h);
  }
  std::string Refused(const std::string& expr) {
    absl::StatusOr<HeadFilterExpression> f = HeadFilterExpression::Parse(expr);
    EXPECT_FALSE(f.ok()) << expr;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << expr;
    return std::string(f.status().message());
  }
  const v1::Head a_ = MakeHead(1, "ab01", "/dev/ublkb0", 2, {"nvme0", "nvme1"});
  const v1::Head b_ = MakeHead(2, "ab02", "", 0, {"nvme1"});
};

TEST_F(HeadFilterTest, IdentitiesMatchWithoutCaseAndNamesWithOrWithoutTheirPrefix) {
  EXPECT_TRUE(M("nguid = \"AB01\"", a_));
  EXPECT_TRUE(M("nguid=ab01", a_));
  EXPECT_FALSE(M("nguid = ab01", b_));
  EXPECT_TRUE(M("name = nguid-ab02", b_));
  EXPECT_TRUE(M("name = \"heads/nguid-ab02\"", b_));
  EXPECT_TRUE(M("subsystem_nqn = \"nqn.2026-01.io.umpath:vol\" AND nsid = 2", b_));
  EXPECT_FALSE(M("subsystem_nqn = \"nqn.2026-01.io.umpath:vol\" AND nsid = 2", a_));
  EXPECT_TRUE(M("subsystemNqn = \"nqn.2026-01.io.umpath:*\"", a_)) << "the JSON name, and a prefix";
  EXPECT_TRUE(M("export_device = \"/dev/ublkb0\"", a_));
  EXPECT_TRUE(M("export_device = /dev/ublkb0", a_));
}

TEST_F(HeadFilterTest, PresenceNumbersBooleansEnumsAndPaths) {
  EXPECT_TRUE(M("export_device:*", a_));
  EXPECT_FALSE(M("export_device:*", b_));
  EXPECT_TRUE(M("uuid != *", a_)) << "no UUID";
  EXPECT_TRUE(M("selectable_paths = 0", b_));
  EXPECT_TRUE(M("selectable_paths > 1", a_));
  EXPECT_FALSE(M("selectable_paths >= 3", a_));
  EXPECT_TRUE(M("removal_pending = false", a_));
  EXPECT_TRUE(M("io_policy = round-robin", a_));
  EXPECT_TRUE(M("io_policy = IO_POLICY_ROUND_ROBIN", a_));
  EXPECT_FALSE(M("io_policy != round_robin", a_));
  EXPECT_TRUE(M("paths:\"nvme0\"", a_));
  EXPECT_FALSE(M("paths:nvme0", b_));
  EXPECT_TRUE(M("paths:\"heads/nguid-ab02/paths/nvme1\"", b_));
  EXPECT_TRUE(M("paths:nvme*", b_));
  EXPECT_TRUE(M("paths != nvme0", b_));
}

TEST_F(HeadFilterTest, OrBindsTighterThanAndAsAip160Says) {
  // a AND b OR c is a AND (b OR c).
  EXPECT_FALSE(M("nsid = 2 AND nsid = 1 OR nguid = ab01", a_));
  EXPECT_TRUE(M("nsid = 1 AND nsid = 2 OR nguid = ab01", a_));
  EXPECT_TRUE(M("(nsid = 2 AND nsid = 1) OR nguid = ab01", a_));
  EXPECT_TRUE(M("nsid = 1 selectable_paths = 2", a_)) << "side by side is AND";
  EXPECT_FALSE(M("nsid = 1 selectable_paths = 0", a_));
  EXPECT_TRUE(M("NOT nsid = 2", a_));
  EXPECT_TRUE(M("-nsid = 2", a_));
  EXPECT_FALSE(M("NOT (nsid = 1 OR nsid = 2)", b_));
  EXPECT_TRUE(M("   ", a_)) << "blank: everything";
}

TEST_F(HeadFilterTest, BadFiltersAreRefusedSayingWhere) {
  EXPECT_THAT(Refused("colour = red"), HasSubstr("no field \"colour\""));
  EXPECT_THAT(Refused("paths_size = 1"), HasSubstr("fields: name, uid"));
  EXPECT_THAT(Refused("create_time = 1"), HasSubstr("no field")) << "timestamps are not filtered on";
  EXPECT_THAT(Refused("nsid = \"1\""), HasSubstr("nsid is a number"));
  EXPECT_THAT(Refused("nsid = one"), HasSubstr("nsid is a number"));
  EXPECT_THAT(Refused("removal_pending > true"), HasSubstr("true or false"));
  EXPECT_THAT(Refused("io_policy = fastest"), HasSubstr("IO_POLICY_NUMA"));
  EXPECT_THAT(Refused("nguid = \"ab"), HasSubstr("closing quote"));
  EXPECT_THAT(Refused("nguid ab01"), HasSubstr("at byte 6: expected a comparison"));
  EXPECT_THAT(Refused("(nsid = 1"), HasSubstr("expected ')'"));
  EXPECT_THAT(Refused("nsid = 1)"), HasSubstr("at byte 8"));
  EXPECT_THAT(Refused("nsid = 1 AND"), HasSubstr("found the end"));
  EXPECT_THAT(Refused("subsystem_nqn = nqn.x:y"), HasSubstr("expected AND, OR or the end"))
      << "a ':' in a value needs quotes";
  EXPECT_THAT(Refused("nsid ! 1"), HasSubstr("'!='"));
  EXPECT_THAT(Refused("nguid = ab01 \x01"), HasSubstr("unexpected character '\\x01'"));
  EXPECT_THAT(Refused(std::string(1025, 'a')), HasSubstr("1025 bytes; at most 1024"));
  EXPECT_THAT(Refused(std::string(40, '(') + "nsid = 1" + std::string(40, ')')), HasSubstr("nested deeper"));
}

}  // namespace
}  // namespace umpath::server
