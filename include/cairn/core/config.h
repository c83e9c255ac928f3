// Job configuration: a schema of typed, documented keys (ConfigSpec) and a resolved,
// validated set of values (Config) loaded from YAML plus "a.b=value" overrides.
//
// Every key a job may set is declared by the module that reads it (model_spec(),
// train_spec(), ...); the spec of the whole job is their union. Loading rejects unknown
// keys (listing the known ones), values of the wrong type and values out of range,
// always naming the key, the value and what is allowed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::core {

enum class FieldType { kInt, kFloat, kBool, kString, kIntList };

struct Field {
  std::string key;  // dotted: "model.n_layer"
  FieldType type = FieldType::kInt;
  std::string default_value;  // canonical text form; empty + required => must be given
  bool required = false;
  double min = -1e300, max = 1e300;  // inclusive, for numbers
  std::vector<std::string> choices;  // for strings; empty = any
  std::string doc;
};

class ConfigSpec {
 public:
  ConfigSpec& add_int(const std::string& key, int64_t def, int64_t min, int64_t max,
                      const std::string& doc);
  ConfigSpec& add_float(const std::string& key, double def, double min, double max,
                        const std::string& doc);
  ConfigSpec& add_bool(const std::string& key, bool def, const std::string& doc);
  ConfigSpec& add_string(const std::string& key, const std::string& def,
                         std::vector<std::string> choices, const std::string& doc);
  // A list of integers, each in [min, max]: a YAML list ([3, 4, 4, 2]) or, as an override,
  // "[3,4,4,2]" or "3,4,4,2"; the default is the empty list.
  ConfigSpec& add_int_list(const std::string& key, int64_t min, int64_t max,
                           const std::string& doc);
  // A string key with no default that every config must set.
  ConfigSpec& add_required_string(const std::string& key, const std::string& doc);
  // Adds every field of `other`. REQUIRES: no key in both.
  ConfigSpec& merge(const ConfigSpec& other);

  const Field* find(const std::string& key) const;
  const std::vector<Field>& fields() const { return fields_; }
  // Markdown-ish table of keys, defaults and docs, for --help and README.
  std::string describe() const;

 private:
  ConfigSpec& add(Field f);
  std::vector<Field> fields_;
};

// Resolved values for every key of a spec. Getters throw std::out_of_range for a key the
// spec does not declare or a type mismatch: that is a programming error, not bad input.
class Config {
 public:
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;
  bool has(const std::string& key) const { return values_.count(key) > 0; }

  // Sets a value from text, validated against `spec`.
  Status set(const ConfigSpec& spec, const std::string& key, const std::string& text);
  // Nested YAML of every resolved key (what a run directory's config.yaml holds).
  std::string to_yaml() const;
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  friend Result<Config> load_config_text(const std::string&, const ConfigSpec&,
                                         const std::vector<std::string>&, const std::string&);
  std::map<std::string, std::string> values_;  // canonical text forms
  std::map<std::string, FieldType> types_;
};

// Loads YAML text, applies `overrides` ("model.n_layer=4"), fills defaults, validates.
// `origin` names the source in error messages (a file name).
Result<Config> load_config_text(const std::string& yaml_text, const ConfigSpec& spec,
                                const std::vector<std::string>& overrides,
                                const std::string& origin = "config");
Result<Config> load_config_file(const std::string& path, const ConfigSpec& spec,
                                const std::vector<std::string>& overrides);

}  // namespace cairn::core
