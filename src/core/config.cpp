// Config loading and validation against a ConfigSpec.
#include "cairn/core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "cairn/core/fs.h"

namespace cairn::core {
namespace {

const char* type_name(FieldType t) {
  switch (t) {
    case FieldType::kInt:
      return "an integer";
    case FieldType::kFloat:
      return "a number";
    case FieldType::kBool:
      return "true or false";
    case FieldType::kString:
      return "a string";
    case FieldType::kIntList:
      return "a list of integers";
  }
  return "?";
}

// The shortest decimal form that reads back as the same double: 1e-05, not
// 1.0000000000000001e-05.
std::string fmt_num(double v) {
  char buf[40];
  if (v == double(int64_t(v)) && v > -1e15 && v < 1e15) {
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// "allowed 1 to 100", "allowed at least 1", "allowed at most 5", or "" for an unbounded field.
std::string allowed_range(const Field& f) {
  const bool low = f.min > -1e299, high = f.max < 1e299;
  if (low && high) return "allowed " + fmt_num(f.min) + " to " + fmt_num(f.max);
  if (low) return "allowed at least " + fmt_num(f.min);
  if (high) return "allowed at most " + fmt_num(f.max);
  return "";
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF): what YAML text is made of, and what to_yaml() can write back unchanged.
bool is_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = 0;  // continuation bytes
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

// Parses `text` as the field's type and checks its range; returns the canonical form.
Result<std::string> canonical(const Field& f, const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(f.key + ": '" + text + "' " + why);
  };
  if (f.type != FieldType::kIntList && text.find_first_not_of(' ') != std::string::npos &&
      text[text.find_first_not_of(' ')] == '[')
    return bad("is a list; expected " + std::string(type_name(f.type)));
  switch (f.type) {
    case FieldType::kIntList: {
      std::string body = text;
      body.erase(0, body.find_first_not_of(' '));
      body.erase(body.find_last_not_of(' ') + 1);
      if (!body.empty() && body.front() == '[') {
        if (body.back() != ']') return bad("is not a list of integers (e.g. [3, 4, 4, 2])");
        body = body.substr(1, body.size() - 2);
      }
      std::string out;
      size_t at = 0;
      while (body.find_first_not_of(" ") != std::string::npos) {
        const size_t comma = body.find(',', at);
        std::string item = body.substr(at, comma == std::string::npos ? comma : comma - at);
        item.erase(0, item.find_first_not_of(' '));
        item.erase(item.find_last_not_of(' ') + 1);
        int64_t v = 0;
        auto r = std::from_chars(item.data(), item.data() + item.size(), v);
        if (item.empty() || r.ec != std::errc() || r.ptr != item.data() + item.size())
          return bad("is not a list of integers (e.g. [3, 4, 4, 2]): '" + item + "'");
        if (v < f.min || v > f.max)
          return bad("has " + item + ", out of range: " + allowed_range(f));
        out += (out.empty() ? "" : ", ") + std::to_string(v);
        if (comma == std::string::npos) break;
        at = comma + 1;
      }
      return "[" + out + "]";
    }
    case FieldType::kInt: {
      int64_t v = 0;
      const char* b = text.data();
      const char* e = b + text.size();
      auto r = std::from_chars(b, e, v);
      if (text.empty() || r.ec != std::errc() || r.ptr != e)
        return bad("is not " + std::string(type_name(f.type)));
      if (v < f.min || v > f.max) return bad("is out of range: " + allowed_range(f));
      return std::to_string(v);
    }
    case FieldType::kFloat: {
      char* end = nullptr;
      double v = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
        return bad("is not " + std::string(type_name(f.type)));
      if (v < f.min || v > f.max) return bad("is out of range: " + allowed_range(f));
      return fmt_num(v);
    }
    case FieldType::kBool: {
      std::string t = text;
      std::transform(t.begin(), t.end(), t.begin(), ::tolower);
      if (t == "true" || t == "yes" || t == "on" || t == "1") return std::string("true");
      if (t == "false" || t == "no" || t == "off" || t == "0") return std::string("false");
      return bad("is not true or false");
    }
    case FieldType::kString: {
      // A --set value can hold any bytes; the run directory's config.yaml only UTF-8.
      if (!is_utf8(text)) return bad("is not valid UTF-8");
      if (!f.choices.empty() &&
          std::find(f.choices.begin(), f.choices.end(), text) == f.choices.end()) {
        std::string allowed;
        for (auto& c : f.choices) allowed += (allowed.empty() ? "" : " | ") + c;
        return bad("is not allowed: choose one of " + allowed);
      }
      return text;
    }
  }
  return Status::Internal("unknown field type");
}

Status unknown_key(const ConfigSpec& spec, const std::string& key, const std::string& origin) {
  std::string best;
  size_t best_d = 4;
  std::string known;
  for (auto& f : spec.fields()) {
    known += "\n  " + f.key;
    size_t d = edit_distance(key, f.key);
    if (d < best_d) best_d = d, best = f.key;
  }
  std::string msg = origin + ": unknown key '" + key + "'";
  if (!best.empty()) msg += " (did you mean '" + best + "'?)";
  return Status::InvalidArgument(msg + "; known keys:" + known);
}

Status flatten(const YAML::Node& node, const std::string& prefix, const std::string& origin,
               std::vector<std::pair<std::string, std::string>>* out) {
  if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      // A key is a name: not a list, a map or empty (YAML allows them all as keys).
      if (!it->first.IsScalar())
        return Status::InvalidArgument(origin + ": a key " +
                                       (prefix.empty() ? "" : "under '" + prefix + "' ") +
                                       "is not a name but a list, a map or nothing");
      std::string k = it->first.Scalar();
      CAIRN_RETURN_IF_ERROR(
          flatten(it->second, prefix.empty() ? k : prefix + "." + k, origin, out));
    }
    return Status::Ok();
  }
  if (node.IsScalar()) {
    out->emplace_back(prefix, node.Scalar());
    return Status::Ok();
  }
  if (node.IsNull()) {
    if (prefix.empty()) return Status::Ok();  // empty document
    return Status::InvalidArgument(origin + ": key '" + prefix + "' has no value");
  }
  if (node.IsSequence()) {  // a list of scalars: its text, for a list key to parse
    std::string text;
    for (const YAML::Node& item : node) {
      if (!item.IsScalar())
        return Status::InvalidArgument(origin + ": key '" + prefix +
                                       "' must be a single value or a list of values");
      text += (text.empty() ? "" : ", ") + item.Scalar();
    }
    out->emplace_back(prefix, "[" + text + "]");
    return Status::Ok();
  }
  return Status::InvalidArgument(origin + ": key '" + prefix +
                                 "' must be a single value, not a map of lists");
}

}  // namespace

ConfigSpec& ConfigSpec::add(Field f) {
  if (find(f.key)) throw std::logic_error("config key declared twice: " + f.key);
  fields_.push_back(std::move(f));
  return *this;
}

ConfigSpec& ConfigSpec::add_int_list(const std::string& key, int64_t min, int64_t max,
                                     const std::string& doc) {
  return add({key, FieldType::kIntList, "[]", false, double(min), double(max), {}, doc});
}

ConfigSpec& ConfigSpec::add_int(const std::string& key, int64_t def, int64_t min, int64_t max,
                                const std::string& doc) {
  return add({key, FieldType::kInt, std::to_string(def), false, double(min), double(max), {}, doc});
}
ConfigSpec& ConfigSpec::add_float(const std::string& key, double def, double min, double max,
                                  const std::string& doc) {
  return add({key, FieldType::kFloat, fmt_num(def), false, min, max, {}, doc});
}
ConfigSpec& ConfigSpec::add_bool(const std::string& key, bool def, const std::string& doc) {
  return add({key, FieldType::kBool, def ? "true" : "false", false, 0, 0, {}, doc});
}
ConfigSpec& ConfigSpec::add_string(const std::string& key, const std::string& def,
                                   std::vector<std::string> choices, const std::string& doc) {
  return add({key, FieldType::kString, def, false, 0, 0, std::move(choices), doc});
}
ConfigSpec& ConfigSpec::add_required_string(const std::string& key, const std::string& doc) {
  return add({key, FieldType::kString, "", true, 0, 0, {}, doc});
}
ConfigSpec& ConfigSpec::merge(const ConfigSpec& other) {
  for (auto& f : other.fields_) add(f);
  return *this;
}

const Field* ConfigSpec::find(const std::string& key) const {
  for (auto& f : fields_)
    if (f.key == key) return &f;
  return nullptr;
}

std::string ConfigSpec::describe() const {
  std::string s;
  for (auto& f : fields_) {
    s += "  " + f.key + " (" + type_name(f.type);
    if (f.required) {
      s += ", required";
    } else {
      s += ", default " + (f.default_value.empty() ? "\"\"" : f.default_value);
    }
    if (!f.choices.empty()) {
      std::string c;
      for (auto& x : f.choices) c += (c.empty() ? "" : "|") + x;
      s += ", one of " + c;
    }
    s += ")\n      " + f.doc + "\n";
  }
  return s;
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  if (types_.at(key) != FieldType::kIntList)
    throw std::out_of_range(key + " is not an integer list key");
  std::vector<int64_t> out;
  std::stringstream ss(values_.at(key).substr(1));
  int64_t v = 0;
  while (ss >> v) {
    out.push_back(v);
    ss.ignore(1);  // ',' or ']'
  }
  return out;
}

int64_t Config::get_int(const std::string& key) const {
  if (types_.at(key) != FieldType::kInt) throw std::out_of_range(key + " is not an int key");
  return std::stoll(values_.at(key));
}
double Config::get_float(const std::string& key) const {
  auto t = types_.at(key);
  if (t != FieldType::kFloat && t != FieldType::kInt)
    throw std::out_of_range(key + " is not a numeric key");
  return std::strtod(values_.at(key).c_str(), nullptr);
}
bool Config::get_bool(const std::string& key) const {
  if (types_.at(key) != FieldType::kBool) throw std::out_of_range(key + " is not a bool key");
  return values_.at(key) == "true";
}
const std::string& Config::get_string(const std::string& key) const {
  if (types_.at(key) != FieldType::kString) throw std::out_of_range(key + " is not a string key");
  return values_.at(key);
}

Status Config::set(const ConfigSpec& spec, const std::string& key, const std::string& text) {
  const Field* f = spec.find(key);
  if (!f) return unknown_key(spec, key, "override");
  CAIRN_ASSIGN_OR_RETURN(std::string v, canonical(*f, text));
  values_[key] = v;
  types_[key] = f->type;
  return Status::Ok();
}

namespace {
struct YamlTree {
  std::map<std::string, YamlTree> children;
  const std::string* value = nullptr;
  FieldType type = FieldType::kString;
};

void emit(YAML::Emitter& out, const YamlTree& t) {
  out << YAML::BeginMap;
  for (auto& [k, c] : t.children) {
    out << YAML::Key << k << YAML::Value;
    if (!c.value) {
      emit(out, c);
    } else if (c.type == FieldType::kString) {
      out << YAML::DoubleQuoted << *c.value;
    } else {
      out << *c.value;  // canonical numbers and booleans are valid YAML scalars
    }
  }
  out << YAML::EndMap;
}
}  // namespace

std::string Config::to_yaml() const {
  YamlTree root;
  for (auto& [key, value] : values_) {
    YamlTree* n = &root;
    std::stringstream ss(key);
    for (std::string p; std::getline(ss, p, '.');) n = &n->children[p];
    n->value = &value;
    n->type = types_.at(key);
  }
  YAML::Emitter out;
  emit(out, root);
  return std::string(out.c_str()) + "\n";
}

Result<Config> load_config_text(const std::string& yaml_text, const ConfigSpec& spec,
                                const std::vector<std::string>& overrides,
                                const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(origin + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap() && !root.IsNull())
    return Status::InvalidArgument(origin + ": top level must be a mapping of sections");
  std::vector<std::pair<std::string, std::string>> flat;
  CAIRN_RETURN_IF_ERROR(flatten(root, "", origin, &flat));

  Config cfg;
  for (auto& f : spec.fields())
    if (!f.required) {
      cfg.values_[f.key] = f.default_value;
      cfg.types_[f.key] = f.type;
    }
  for (auto& [k, v] : flat) {
    if (!spec.find(k)) return unknown_key(spec, k, origin);
    CAIRN_RETURN_IF_ERROR(cfg.set(spec, k, v).WithContext(origin));
  }
  for (auto& o : overrides) {
    auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0)
      return Status::InvalidArgument("override '" + o + "' must look like key=value, e.g. " +
                                     "train.lr=3e-4");
    CAIRN_RETURN_IF_ERROR(cfg.set(spec, o.substr(0, eq), o.substr(eq + 1)));
  }
  for (auto& f : spec.fields())
    if (f.required && !cfg.has(f.key))
      return Status::InvalidArgument(origin + ": required key '" + f.key + "' is missing (" +
                                     f.doc + ")");
  return cfg;
}

Result<Config> load_config_file(const std::string& path, const ConfigSpec& spec,
                                const std::vector<std::string>& overrides) {
  auto text = read_file(path);
  if (!text.ok()) return text.status();
  return load_config_text(*text, spec, overrides, path);
}

}  // namespace cairn::core
