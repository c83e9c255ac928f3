// HuggingFace model folders on storage (config.json + model.safetensors), and writing an
// imported model as a cairn checkpoint.
#include <filesystem>

#include "cairn/ckpt/hf.h"
#include "cairn/ckpt/safetensors.h"
#include "cairn/core/fs.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {

Status export_hf(const std::string& out_dir, const model::ModelConfig& config,
                 const TensorMap& params, const HfExportOptions& options) {
  CAIRN_ASSIGN_OR_RETURN(auto tensors, to_hf_tensors(config, params, options));
  CAIRN_RETURN_IF_ERROR(core::make_dirs(out_dir));
  // "format": "pt" is what transformers' loader expects in a safetensors file's metadata.
  CAIRN_RETURN_IF_ERROR(
      write_safetensors(out_dir + "/model.safetensors", tensors, {{"format", "pt"}}));
  return core::write_file_atomic(out_dir + "/config.json",
                                 hf_config_json(config, options).dump(2) + "\n");
}

namespace {

// `dir`/`name` when it resolves inside `dir`, or, for a HuggingFace hub cache snapshot
// (<repo>/snapshots/<revision>/, whose files link to <repo>/blobs/), inside its repository
// folder. A link elsewhere is refused, naming where it points.
Status check_stays_in_folder(const std::string& dir, const std::string& name) {
  std::error_code ec;
  const fs::path file = fs::path(dir) / name;
  if (!fs::is_symlink(file, ec)) return Status::Ok();
  const fs::path target = fs::canonical(file, ec);
  if (ec) return Status::NotFound(file.string() + ": a link to a missing file");
  fs::path root = fs::canonical(dir, ec);
  if (root.parent_path().filename() == "snapshots") root = root.parent_path().parent_path();
  const auto rel = target.lexically_relative(root);
  if (!rel.empty() && *rel.begin() != "..") return Status::Ok();
  return Status::InvalidArgument(file.string() + " links to " + target.string() +
                                 ", outside the folder being imported (" + root.string() +
                                 "); copy the file in instead");
}

}  // namespace

Result<HfModel> read_hf(const std::string& dir) {
  if (!fs::is_directory(dir)) return Status::NotFound(dir + ": no such directory");
  const std::string config_path = dir + "/config.json";
  const std::string weights_path = dir + "/model.safetensors";
  if (!fs::exists(weights_path)) {
    if (fs::exists(dir + "/model.safetensors.index.json"))
      return Status::Unsupported(dir +
                                 ": holds a sharded model (model.safetensors.index.json); "
                                 "cairn reads a single model.safetensors");
    if (fs::exists(dir + "/pytorch_model.bin"))
      return Status::Unsupported(dir +
                                 ": holds pytorch_model.bin (a pickle), which cairn does "
                                 "not read; save the model with safe_serialization=True to get "
                                 "model.safetensors");
    return Status::NotFound(weights_path + ": no such file");
  }
  CAIRN_RETURN_IF_ERROR(check_stays_in_folder(dir, "config.json"));
  CAIRN_RETURN_IF_ERROR(check_stays_in_folder(dir, "model.safetensors"));
  auto text = core::read_file(config_path);
  if (!text.ok()) return text.status();
  HfModel out;
  out.config_json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (out.config_json.is_discarded())
    return Status::InvalidArgument(config_path + ": not valid JSON");
  CAIRN_ASSIGN_OR_RETURN(out.config, model_config_from_hf(out.config_json, config_path));
  CAIRN_ASSIGN_OR_RETURN(TensorMap hf, read_safetensors(weights_path));
  CAIRN_ASSIGN_OR_RETURN(out.params, from_hf_tensors(out.config, hf, weights_path));
  return out;
}

Result<SaveInfo> save_model_checkpoint(const std::string& root, const TensorMap& params,
                                       const nlohmann::json& state) {
  if (!list_steps(root).empty() || fs::exists(root + "/latest"))
    return Status::FailedPrecondition(root +
                                      ": already holds checkpoints; import into a new "
                                      "directory so that no run is overwritten");
  std::vector<NamedTensor> tensors;
  for (auto& [name, t] : params) tensors.push_back({"model." + name, t});
  return save_checkpoint(root, 0, tensors, state);
}

}  // namespace cairn::ckpt
