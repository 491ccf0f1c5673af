// `m3d train lamed`, `m3d export --merge-lora` and `m3d quickstart --quick` end to end
// on a small synthetic set: stage 1 trains only the projector and input embeddings;
// stage 2 (LoRA) leaves the base LLM weights alone, writes a peft adapter and a merged
// final model that loads as a plain checkpoint and equals the export of its last
// checkpoint; the quickstart's smoke run writes its table, examples and index.html
// and reuses them on a rerun, and its model (with its own m3d_recipe.json) answers
// `m3d generate` on the example scan as the quickstart did. `m3d encode` and
// `m3d generate` refuse an image off the model grid with the same line.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/synth.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/tensor.h"
#include "models/causal_lm.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;
const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";

class CliLamed : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(fs::temp_directory_path() / ("m3d_cli_lamed_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    data::SynthOptions o;
    o.count = 12;
    o.output = *root_ + "/data";
    o.seed = 3;
    o.progress = false;
    data::synth_write(o);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  static std::map<std::string, at::Tensor> weights(const std::string& file) {
    const auto ckpt = io::checkpoint_open(file);
    std::map<std::string, at::Tensor> out;
    for (const auto& [name, record] : ckpt.tensors) out[name] = io::tensor_from_record(record).clone();
    return out;
  }
  // The tiny LaMed fixture (32x256x256 input, 300-token vocabulary) on the synthetic set.
  static std::string train(const std::string& name, const std::string& preset, const std::string& extra, const std::string& init = fixture("lamed_phi3_tiny")) {
    const std::string out = *root_ + "/" + name;
    std::string stdout_text, stderr_text;
    const std::string command = kM3d + " train lamed -q --preset " + preset + " --init " + init + " --data " + *root_ + "/data -o " + out +
                                " --max-steps 2 --set batch_size=2 --set max_length=400 --set workers=1 --set save_steps=1" +
                                " --set save_total_limit=1 --set eval_limit=2 --set eval_fraction=0.5 " + extra;
    EXPECT_EQ(run_command(command, &stdout_text, &stderr_text), 0) << stderr_text;
    return out;
  }
  static std::string* root_;
};
std::string* CliLamed::root_ = nullptr;

TEST_F(CliLamed, Stage1TrainsOnlyTheProjectorAndInputEmbeddings) {
  const std::string out = train("stage1", "stage1", "");
  const auto before = weights(fixture("lamed_phi3_tiny/model.safetensors"));
  const auto after = weights(out + "/final/model.safetensors");
  ASSERT_TRUE(fs::exists(out + "/final/added_tokens.json"));
  const auto added = read_json(out + "/final/added_tokens.json");
  EXPECT_EQ(added.at("<im_patch>"), 299);  // already in the tokenizer
  EXPECT_EQ(added.at("[SEG]"), 302);  // three tokens added after it
  size_t changed = 0;
  for (const auto& [name, tensor] : after) {
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
      EXPECT_EQ(tensor.size(0), 303) << name << ": resized to the tokenizer";
      if (name == "lm_head.weight") { EXPECT_TRUE(torch::equal(tensor.slice(0, 0, 300), before.at(name))) << "lm_head is frozen in stage 1"; }
      continue;
    }
    const bool same = torch::equal(tensor, before.at(name));
    if (name.find("mm_projector") != std::string::npos) {
      EXPECT_FALSE(same) << name << " should train";
      ++changed;
    } else {
      EXPECT_TRUE(same) << name << " should stay frozen";
    }
  }
  EXPECT_EQ(changed, 4u);
  EXPECT_FALSE(fs::exists(out + "/final/m3d_recipe.json")) << "on m3d-lamed's grid the built-in recipe serves";
  std::ifstream log(out + "/metrics.jsonl");
  std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("caption_loss"), std::string::npos) << "the validation loss is logged";
}

TEST_F(CliLamed, Stage2LoraWritesAnAdapterAndAMergedModelEqualToTheExport) {
  const std::string out = train("stage2", "stage2",
                                "--set 'lora={\"r\":4,\"lora_alpha\":8,\"lora_dropout\":0.05}' "
                                "--set 'mixture={\"cap\":1,\"vqa_closed\":1,\"vqa_open\":1,\"rec\":1,\"reg\":1,\"refseg\":1}'");
  ASSERT_TRUE(fs::exists(out + "/checkpoint-2/adapter/adapter_config.json"));
  ASSERT_TRUE(fs::exists(out + "/final/adapter/adapter_model.safetensors"));
  const auto base = weights(fixture("lamed_phi3_tiny/model.safetensors"));
  const auto checkpoint = weights(out + "/checkpoint-2/model.safetensors");
  // The LLM's Linear weights are frozen under LoRA; their adapters train.
  EXPECT_TRUE(torch::equal(checkpoint.at("model.layers.0.self_attn.qkv_proj.weight"), base.at("model.layers.0.self_attn.qkv_proj.weight")));
  EXPECT_GT(checkpoint.at("model.layers.0.self_attn.qkv_proj.lora_B.weight").abs().max().item<double>(), 0);
  EXPECT_TRUE(torch::equal(checkpoint.at("model.layers.0.input_layernorm.weight"), base.at("model.layers.0.input_layernorm.weight")));
  EXPECT_FALSE(torch::equal(checkpoint.at("model.vision_tower.vision_tower.norm.weight"), base.at("model.vision_tower.vision_tower.norm.weight")))
      << "stage 2 trains the vision tower in full";

  std::string stdout_text, stderr_text;
  ASSERT_EQ(run_command(kM3d + " export --merge-lora " + out + "/checkpoint-2 -o " + *root_ + "/exported", &stdout_text, &stderr_text), 0) << stderr_text;
  EXPECT_NE(stdout_text.find("8 LoRA layers merged"), std::string::npos) << stdout_text;
  const auto exported = weights(*root_ + "/exported/model.safetensors"), final_weights = weights(out + "/final/model.safetensors");
  ASSERT_EQ(exported.size(), base.size()) << "the plain HF key set";
  for (const auto& [name, tensor] : final_weights) EXPECT_TRUE(torch::allclose(tensor, exported.at(name), 0, 1e-7)) << name;
  EXPECT_NO_THROW(models::model_load(*root_ + "/exported"));
  // An existing model is not overwritten; a folder without an adapter is refused.
  EXPECT_NE(run_command(kM3d + " export --merge-lora " + out + "/checkpoint-2 -o " + *root_ + "/exported", &stdout_text, &stderr_text), 0);
  EXPECT_NE(stderr_text.find("already holds a model"), std::string::npos) << stderr_text;
  EXPECT_NE(run_command(kM3d + " export --merge-lora " + fixture("lamed_phi3_tiny") + " -o " + *root_ + "/x", &stdout_text, &stderr_text), 0);
  EXPECT_NE(stderr_text.find("no LoRA adapter"), std::string::npos) << stderr_text;
}

// A checkpoint with its own recipe passes it on to what is trained from it.
TEST_F(CliLamed, TrainingFromACheckpointKeepsItsRecipe) {
  const std::string init = *root_ + "/init_with_recipe";
  fs::create_directories(init);
  for (const auto& entry : fs::directory_iterator(fixture("lamed_phi3_tiny"))) fs::copy_file(entry.path(), init + "/" + entry.path().filename().string());
  const nlohmann::json recipe = {
      {"name", "ct-abdomen"}, {"source", "a test"}, {"ops", {{{"op", "window"}, {"preset", "abdomen"}}, {{"op", "resize"}, {"size", {32, 256, 256}}}}}};
  std::ofstream(init + "/m3d_recipe.json") << recipe.dump();
  const std::string out = train("with_recipe", "stage1", "", init);
  for (const char* dir : {"/checkpoint-2", "/final"}) {
    const auto written = read_json(out + dir + "/m3d_recipe.json");
    EXPECT_EQ(written["name"], "ct-abdomen") << dir;
    EXPECT_EQ(written["ops"], recipe["ops"]) << dir;
  }
}

TEST_F(CliLamed, Stage2TrainsUnderBf16AutocastWithCheckpointedVitBlocks) {
  const std::string out = train("bf16", "stage2", "--set bf16=true --set gradient_checkpointing=true --set log_steps=1");
  const auto base = weights(fixture("lamed_phi3_tiny/model.safetensors"));
  const auto after = weights(out + "/checkpoint-2/model.safetensors");
  for (const auto& [name, tensor] : after) EXPECT_EQ(tensor.scalar_type(), torch::kFloat) << name << ": weights stay f32";
  EXPECT_FALSE(torch::equal(after.at("model.vision_tower.vision_tower.blocks.0.mlp.linear1.weight"),
                            base.at("model.vision_tower.vision_tower.blocks.0.mlp.linear1.weight")))
      << "the checkpointed ViT blocks get gradients";
  std::ifstream log(out + "/metrics.jsonl");
  size_t steps = 0;
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("loss")) continue;
    EXPECT_TRUE(std::isfinite(j["loss"].get<double>())) << line;
    ++steps;
  }
  EXPECT_EQ(steps, 2u);
}

TEST_F(CliLamed, BadConfigsFailClearly) {
  std::string out, err;
  EXPECT_NE(run_command(kM3d + " train lamed --preset stage2 --init " + fixture("lamed_phi3_tiny") + " --data " + *root_ + "/data -o " + *root_ +
                            "/bad --set stage=sideways",
                        &out, &err),
            0);
  EXPECT_NE(err.find("stage must be pretrain, finetune or full"), std::string::npos) << err;
  EXPECT_NE(run_command(kM3d + " train lamed --preset stage2 --init " + fixture("lamed_phi3_tiny") + " --data " + *root_ + "/data -o " + *root_ +
                            "/bad --set 'mixture={\"captions\":1}'",
                        &out, &err),
            0);
  EXPECT_NE(err.find("unknown mixture task 'captions'"), std::string::npos) << err;
  EXPECT_NE(run_command(kM3d + " train lamed --preset tiny --data " + *root_ + "/data -o " + *root_ + "/bad --set bogus=1", &out, &err), 0);
  EXPECT_NE(err.find("unknown training option 'bogus'"), std::string::npos) << err;
}

TEST_F(CliLamed, QuickstartSmokeRunWritesEverythingAndReusesIt) {
  const std::string dir = *root_ + "/quickstart";
  std::string out, err;
  ASSERT_EQ(run_command("cd " + std::string(M3D_SOURCE_DIR) + " && " + kM3d + " quickstart --quick --no-progress -o " + dir, &out, &err), 0) << err;
  for (const char* file : {"index.html", "bench.md", "bench.json", "examples/example.json", "examples/ct.nii.gz", "examples/preview.png",
                           "examples/rec_box.png", "lamed/final/model.safetensors"}) {
    EXPECT_TRUE(fs::exists(dir + "/" + file)) << file;
  }
  const auto bench = read_json(dir + "/bench.json");
  ASSERT_EQ(bench.size(), 5u);
  EXPECT_NE(out.find("closed VQA accuracy"), std::string::npos) << out;
  const auto example = read_json(dir + "/examples/example.json");
  EXPECT_TRUE(example.contains("report") && example.contains("vqa_answer") && example.contains("rec_answer"));
  // The tiny LaMed carries its recipe (M3D-Data's preparation, then its 16x64x64 grid), so
  // m3d generate takes the scan as it is and answers as the worked example did.
  const auto recipe = read_json(dir + "/lamed/final/m3d_recipe.json");
  EXPECT_EQ(recipe["ops"].back()["size"], nlohmann::json({16, 64, 64})) << recipe.dump();
  std::string answer;
  ASSERT_EQ(run_command(kM3d + " generate --model " + dir + "/lamed/final --image " + dir + "/examples/ct.nii.gz --prompt ' " +
                            example["rec_question"].get<std::string>() + "' --greedy --max-new-tokens 48 --json",
                        &answer, &err),
            0)
      << err;
  EXPECT_EQ(nlohmann::json::parse(answer)["text"], example["rec_answer"]);
  // A rerun trains nothing again.
  ASSERT_EQ(run_command("cd " + std::string(M3D_SOURCE_DIR) + " && " + kM3d + " quickstart --quick --no-progress -o " + dir, &out, &err), 0) << err;
  EXPECT_NE(err.find("reusing " + dir + "/lamed/final"), std::string::npos) << err;
}

// Med3DVLM (VLMQwen: DCFormer + mixer + Qwen2) through the same trainer, from the tiny
// official-layout fixture (128x256x256 grid, 401-token vocabulary with <im_patch>).
// Stage 1 (pretrain_mm_projector.sh) trains the mixer projector and the input
// embeddings; the frozen DCFormer's BatchNorm statistics still move (train mode, as the
// official run: frozen is not eval); nothing else changes.
TEST_F(CliLamed, Med3dvlmStage1TrainsTheMixerAndEmbeddingsAndMovesBatchNormStatistics) {
  const std::string init = fixture("med3dvlm/vlm_qwen_tiny");
  const std::string out = train("med3dvlm1", "med3dvlm-stage1", "--set max_length=160", init);
  const auto before = weights(init + "/model.safetensors");
  const auto after = weights(out + "/final/model.safetensors");
  const auto added = read_json(out + "/final/added_tokens.json");
  EXPECT_EQ(added.size(), 1u) << "train_vlm.py adds <im_patch> only: " << added.dump();
  EXPECT_EQ(added.at("<im_patch>"), 400);
  ASSERT_EQ(after.size(), before.size());
  size_t projector = 0, statistics = 0;
  for (const auto& [name, tensor] : after) {
    const bool same = torch::equal(tensor, before.at(name));
    if (name.find("mm_projector") != std::string::npos || name == "model.embed_tokens.weight") {
      EXPECT_FALSE(same) << name << " should train";
      projector += name.find("mm_projector") != std::string::npos;
    } else if (name.find(".running_") != std::string::npos || name.find("num_batches_tracked") != std::string::npos) {
      EXPECT_FALSE(same) << name << ": BatchNorm in train mode updates its statistics";
      ++statistics;
    } else {
      EXPECT_TRUE(same) << name << " should stay frozen";
    }
  }
  EXPECT_EQ(projector, 48u) << "2 streams x 2 mixer layers x (2 LayerNorms + 2 MLPs of 2 Linears) x (weight, bias)";
  EXPECT_GT(statistics, 0u);
}

// Stage 2 (finetune_lora.sh): LoRA on every Linear of the Qwen2 decoder (q, k, v, o, gate,
// up, down), the DCFormer, projector, embeddings and lm_head in full; the merged final
// model equals `m3d export --merge-lora` of the last checkpoint.
TEST_F(CliLamed, Med3dvlmStage2PutsLoraOnEveryLlmLinearAndTrainsTheTowerInFull) {
  const std::string init = fixture("med3dvlm/vlm_qwen_tiny");
  const std::string out = train("med3dvlm2", "med3dvlm-stage2", "--set max_length=160 --set 'lora={\"r\":4,\"lora_alpha\":8,\"lora_dropout\":0.05}'", init);
  const auto base = weights(init + "/model.safetensors");
  const auto checkpoint = weights(out + "/checkpoint-2/model.safetensors");
  for (const char* linear : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
    const std::string name = std::string("model.layers.1.") + linear;
    ASSERT_TRUE(checkpoint.count(name + ".lora_A.weight")) << name;
    EXPECT_TRUE(torch::equal(checkpoint.at(name + ".weight"), base.at(name + ".weight"))) << name << " is frozen under LoRA";
  }
  EXPECT_FALSE(checkpoint.count("model.mm_projector.low_mixer.0.mlp1.mm_projector.0.lora_A.weight")) << "no LoRA on the projector";
  EXPECT_FALSE(torch::equal(checkpoint.at("model.vision_tower.vision_tower.encoder.s1.0.dwconv.c1.0.weight"),
                            base.at("model.vision_tower.vision_tower.encoder.s1.0.dwconv.c1.0.weight")))
      << "stage 2 trains the DCFormer in full";
  EXPECT_FALSE(torch::equal(checkpoint.at("lm_head.weight").slice(0, 0, 400), base.at("lm_head.weight").slice(0, 0, 400)));
  std::string stdout_text, stderr_text;
  ASSERT_EQ(run_command(kM3d + " export --merge-lora " + out + "/checkpoint-2 -o " + *root_ + "/med3dvlm-exported", &stdout_text, &stderr_text), 0)
      << stderr_text;
  EXPECT_NE(stdout_text.find("14 LoRA layers merged"), std::string::npos) << stdout_text;
  const auto exported = weights(*root_ + "/med3dvlm-exported/model.safetensors"), final_weights = weights(out + "/final/model.safetensors");
  ASSERT_EQ(exported.size(), base.size()) << "the plain HF key set";
  for (const auto& [name, tensor] : final_weights) EXPECT_TRUE(torch::allclose(tensor, exported.at(name), 0, 1e-6)) << name;
}

// `m3d bench --protocol med3dvlm`: Med3DVLM's eval settings (sampling seeded per sample, a
// report prompt drawn per sample) give the same predictions on every run, and a folder
// made under one protocol does not resume under the other.
TEST_F(CliLamed, BenchMed3dvlmProtocolIsSeededPerSampleAndPartOfTheRunIdentity) {
  const std::string base = kM3d + " bench --model " + fixture("med3dvlm/vlm_qwen_tiny") + " --data " + *root_ +
                           "/data --split train --task report --limit 3 --max-new-tokens 4 --protocol med3dvlm -o ";
  std::string out, err;
  ASSERT_EQ(run_command(base + *root_ + "/bench_a", &out, &err), 0) << err;
  ASSERT_EQ(run_command(base + *root_ + "/bench_b", &out, &err), 0) << err;
  auto text = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  const std::string predictions = text(*root_ + "/bench_a/predictions.csv");
  EXPECT_EQ(predictions, text(*root_ + "/bench_b/predictions.csv"));
  EXPECT_EQ(read_json(*root_ + "/bench_a/summary.json")["protocol"], "med3dvlm");
  EXPECT_NE(run_command(kM3d + " bench --model " + fixture("med3dvlm/vlm_qwen_tiny") + " --data " + *root_ +
                            "/data --split train --task report --limit 3 --max-new-tokens 4 -o " + *root_ + "/bench_a",
                        &out, &err),
            0);
  EXPECT_NE(err.find("protocol"), std::string::npos) << err;
  EXPECT_NE(run_command(base + *root_ + "/bench_c --protocol nope", &out, &err), 0);
}

TEST_F(CliLamed, Med3dvlmQuickstartSmokeRunWritesItsOwnPage) {
  const std::string dir = *root_ + "/quickstart-med3dvlm";
  std::string out, err;
  ASSERT_EQ(run_command("cd " + std::string(M3D_SOURCE_DIR) + " && " + kM3d + " quickstart --quick --no-progress --family med3dvlm -o " + dir, &out, &err), 0)
      << err;
  for (const char* file : {"med3dvlm-index.html", "med3dvlm-bench.md", "med3dvlm-bench.json", "med3dvlm-examples/example.json", "med3dvlm-examples/preview.png",
                           "siglip/checkpoint-2/config.json", "med3dvlm/final/model.safetensors"}) {
    EXPECT_TRUE(fs::exists(dir + "/" + file)) << file;
  }
  EXPECT_EQ(read_json(dir + "/med3dvlm-bench.json").size(), 3u) << "closed VQA and the report's two metrics; Med3DVLM has no positioning";
  const auto config = read_json(dir + "/med3dvlm/final/config.json");
  EXPECT_EQ(config["model_type"], "vlm_qwen");
  EXPECT_EQ(config["vocab_size"], 151666) << "Qwen2.5's vocabulary with <im_patch>, as the released model";
  const auto recipe = read_json(dir + "/med3dvlm/final/m3d_recipe.json");
  EXPECT_EQ(recipe["ops"].back()["size"], nlohmann::json({16, 128, 128})) << recipe.dump();
  const auto example = read_json(dir + "/med3dvlm-examples/example.json");
  std::string answer;
  ASSERT_EQ(run_command(kM3d + " generate --model " + dir + "/med3dvlm/final --image " + dir + "/med3dvlm-examples/ct.nii.gz --prompt ' " +
                            example["vqa_question"].get<std::string>() + "' --greedy --max-new-tokens 48 --json",
                        &answer, &err),
            0)
      << err;
  EXPECT_EQ(nlohmann::json::parse(answer)["text"], example["vqa_answer"]);
}

// The line of `err` that reports the error ("m3d: error: ..."), or all of `err`.
std::string error_line(const std::string& err) {
  const size_t start = err.find("m3d: error: ");
  if (start == std::string::npos) return err;
  return err.substr(start, err.find('\n', start) - start);
}

// Both commands run the same vision side, which refuses an image off the model grid
// (generate once resampled it silently, so the two disagreed), saying how to fix it.
TEST(CliLamedGrid, EncodeAndGenerateRefuseAnImageOffTheModelGridAlike) {
  const std::string dir = temp_dir(), model = fixture("lamed_phi3_tiny");  // config.json image_size [32, 256, 256]
  const std::vector<float> voxels(16 * 16 * 16, 0.5f);
  io::npy_write(dir + "/small.npy", DType::F32, {1, 16, 16, 16}, voxels.data());
  std::string out, encode_err, generate_err;
  EXPECT_EQ(run_command(kM3d + " encode --model " + model + " --image " + dir + "/small.npy -o " + dir + "/out.safetensors", &out, &encode_err), 1);
  EXPECT_FALSE(fs::exists(dir + "/out.safetensors"));
  EXPECT_EQ(run_command(kM3d + " generate --model " + model + " --image " + dir + "/small.npy --prompt hi --max-new-tokens 2", &out, &generate_err), 1);
  EXPECT_EQ(error_line(encode_err),
            "m3d: error: image is 1x1x16x16x16 but this model's grid is 32x256x256 (D x H x W; expected an image of shape [B, 1, 32, 256, 256]): "
            "prepare the scan with --recipe (the checkpoint's m3d_recipe.json or the built-in m3d-lamed) or give a .npy already on the model grid");
  EXPECT_EQ(error_line(generate_err), error_line(encode_err));
}

}  // namespace
}  // namespace m3d::test
