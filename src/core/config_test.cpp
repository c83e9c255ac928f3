#include "cairn/core/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cairn::core {
namespace {

using ::testing::HasSubstr;

ConfigSpec TestSpec() {
  ConfigSpec s;
  s.add_string("model.arch", "gpt2", {"gpt2", "llama"}, "architecture")
      .add_int("model.n_layer", 4, 1, 1024, "layers")
      .add_float("train.lr", 1e-3, 0, 10, "learning rate")
      .add_bool("train.activation_checkpointing", false, "recompute blocks")
      .add_int_list("parallel.pp_layers", 0, 100, "blocks per stage")
      .add_required_string("data.path", "token directory");
  return s;
}

TEST(Config, LoadsValuesAndDefaults) {
  auto cfg = load_config_text("model:\n  n_layer: 6\ndata:\n  path: d\n", TestSpec(), {});
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->get_int("model.n_layer"), 6);
  EXPECT_EQ(cfg->get_string("model.arch"), "gpt2");
  EXPECT_DOUBLE_EQ(cfg->get_float("train.lr"), 1e-3);
  EXPECT_FALSE(cfg->get_bool("train.activation_checkpointing"));
  EXPECT_EQ(cfg->get_string("data.path"), "d");
}

TEST(Config, OverridesWin) {
  auto cfg = load_config_text("data: {path: d}\n", TestSpec(),
                              {"train.lr=3e-4", "train.activation_checkpointing=yes"});
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_DOUBLE_EQ(cfg->get_float("train.lr"), 3e-4);
  EXPECT_TRUE(cfg->get_bool("train.activation_checkpointing"));
}

TEST(Config, UnknownKeyListsKnownKeysAndSuggests) {
  auto cfg = load_config_text("model: {n_layers: 3}\ndata: {path: d}\n", TestSpec(), {}, "x.yaml");
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(cfg.status().message(), HasSubstr("x.yaml: unknown key 'model.n_layers'"));
  EXPECT_THAT(cfg.status().message(), HasSubstr("did you mean 'model.n_layer'"));
  EXPECT_THAT(cfg.status().message(), HasSubstr("train.lr"));
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  auto cfg = load_config_text("model: {n_layer: four}\ndata: {path: d}\n", TestSpec(), {});
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.status().message(), HasSubstr("model.n_layer: 'four' is not an integer"));
}

TEST(Config, OutOfRangeNamesAllowedRange) {
  auto cfg = load_config_text("data: {path: d}\n", TestSpec(), {"model.n_layer=0"});
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.status().message(), HasSubstr("'0' is out of range: allowed 1 to 1024"));
}

TEST(Config, ChoiceListsAllowedValues) {
  auto cfg = load_config_text("model: {arch: bert}\ndata: {path: d}\n", TestSpec(), {});
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.status().message(), HasSubstr("choose one of gpt2 | llama"));
}

TEST(Config, MissingRequiredKey) {
  auto cfg = load_config_text("model: {n_layer: 2}\n", TestSpec(), {});
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.status().message(), HasSubstr("required key 'data.path' is missing"));
}

TEST(Config, BadOverrideSyntaxAndBadYaml) {
  EXPECT_FALSE(load_config_text("data: {path: d}\n", TestSpec(), {"train.lr"}).ok());
  auto bad = load_config_text("model: [1, 2\n", TestSpec(), {});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("not valid YAML"));
  auto list = load_config_text("model: {n_layer: [1, 2]}\n", TestSpec(), {});
  ASSERT_FALSE(list.ok());
  EXPECT_THAT(list.status().message(), HasSubstr("is a list; expected an integer"));
}

TEST(Config, IntegerListsFromYamlAndOverrides) {
  auto cfg =
      load_config_text("parallel: {pp_layers: [3, 4, 4, 2]}\ndata: {path: d}\n", TestSpec(), {});
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->get_int_list("parallel.pp_layers"), (std::vector<int64_t>{3, 4, 4, 2}));
  for (const char* text : {"[1,0, 2]", "1,0,2", " [ 1 , 0 , 2 ] "}) {
    auto o = load_config_text("data: {path: d}\n", TestSpec(),
                              {std::string("parallel.pp_layers=") + text});
    ASSERT_TRUE(o.ok()) << text << ": " << o.status().ToString();
    EXPECT_EQ(o->get_int_list("parallel.pp_layers"), (std::vector<int64_t>{1, 0, 2})) << text;
    auto again = load_config_text(o->to_yaml(), TestSpec(), {});  // the run directory's copy
    ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << o->to_yaml();
    EXPECT_EQ(again->values(), o->values());
  }
  auto none = load_config_text("data: {path: d}\n", TestSpec(), {});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->get_int_list("parallel.pp_layers").empty());
  for (const char* bad : {"[1, x]", "[1,,2]", "[1, 200]", "[1, 2"}) {
    auto b = load_config_text("data: {path: d}\n", TestSpec(),
                              {std::string("parallel.pp_layers=") + bad});
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_THAT(b.status().message(), HasSubstr("parallel.pp_layers")) << bad;
  }
  auto nested =
      load_config_text("parallel: {pp_layers: [[1], 2]}\ndata: {path: d}\n", TestSpec(), {});
  ASSERT_FALSE(nested.ok());
  EXPECT_THAT(nested.status().message(), HasSubstr("a list of values"));
}

TEST(Config, YamlRoundTrip) {
  auto cfg = load_config_text("data: {path: 'my dir'}\n", TestSpec(), {"train.lr=0.1"});
  ASSERT_TRUE(cfg.ok());
  auto again = load_config_text(cfg->to_yaml(), TestSpec(), {});
  ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << cfg->to_yaml();
  EXPECT_EQ(again->values(), cfg->values());
}

// Found by fuzz/config_fuzz: a key that is a map, a list or nothing threw out of
// load_config_text (yaml-cpp's conversion of the key to a string).
TEST(Config, KeysThatAreNotNamesAreRejected) {
  for (const char* yaml :
       {"? {a: 1}\n: 2\n", "[1, 2]: 3\n", "model: {? [a]: 1}\n", "? :\x04:::\x04"}) {
    auto cfg = load_config_text(yaml, TestSpec(), {}, "x.yaml");
    ASSERT_FALSE(cfg.ok()) << yaml;
    EXPECT_EQ(cfg.status().code(), StatusCode::kInvalidArgument) << yaml;
  }
  auto nested = load_config_text("model: {? [a]: 1}\n", TestSpec(), {}, "x.yaml");
  EXPECT_THAT(nested.status().message(),
              HasSubstr("x.yaml: a key under 'model' is not a name but a list, a map or nothing"));
}

// Found by fuzz/config_fuzz: a string that is not UTF-8 loaded, but the run directory's
// config.yaml wrote it with replacement characters, so it read back as another value.
TEST(Config, StringsMustBeUtf8SoThatConfigYamlReadsBack) {
  auto yaml = load_config_text("data:\n  path: data\xd1\x94\x95\x82\n", TestSpec(), {});
  ASSERT_FALSE(yaml.ok());
  EXPECT_THAT(yaml.status().message(), HasSubstr("data.path: "));
  EXPECT_THAT(yaml.status().message(), HasSubstr("is not valid UTF-8"));
  for (const char* bad : {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ab\xe2\x82"}) {
    auto o = load_config_text("", TestSpec(), {std::string("data.path=") + bad});
    EXPECT_FALSE(o.ok()) << bad;
  }
  auto good = load_config_text("", TestSpec(), {"data.path=d\xd1\x94 \xf0\x9f\x98\x80"});
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  auto again = load_config_text(good->to_yaml(), TestSpec(), {});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->values(), good->values());
}

}  // namespace
}  // namespace cairn::core
