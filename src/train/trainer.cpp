// The shared training loop (see trainer.h).
#include "train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>

#include "core/progress.h"
#include "imaging/model_input.h"
#include "imaging/preprocess.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/autocast.h"
#include "train/distributed.h"
#include "train/optim.h"

namespace m3d::train {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string checkpoint_name(int64_t step) { return fmt::format("checkpoint-{}", step); }

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read it", path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A generator for one (purpose, epoch, index): independent of ranks and threads.
double uniform(std::mt19937_64& rng, double lo, double hi) { return lo + (hi - lo) * std::uniform_real_distribution<double>(0, 1)(rng); }

// The official train transforms (MONAI RandRotate90 on (H, W), RandFlip on D, H, W,
// RandScaleIntensity and RandShiftIntensity) on a (1, D, H, W) volume.
torch::Tensor augment(torch::Tensor image, std::mt19937_64& rng, torch::Tensor* mask) {
  if (uniform(rng, 0, 1) < 0.5) {
    const int64_t k = 1 + static_cast<int64_t>(rng() % 3);
    image = torch::rot90(image, k, {2, 3});
    if (mask) *mask = torch::rot90(*mask, k, {2, 3});
  }
  for (int64_t axis = 1; axis <= 3; ++axis) {
    if (uniform(rng, 0, 1) < 0.1) {
      image = torch::flip(image, {axis});
      if (mask) *mask = torch::flip(*mask, {axis});
    }
  }
  if (uniform(rng, 0, 1) < 0.5) image = image * (1.0 + uniform(rng, -0.1, 0.1));
  if (uniform(rng, 0, 1) < 0.5) image = image + uniform(rng, -0.1, 0.1);
  return image.contiguous();
}

std::vector<int64_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, const std::vector<int64_t>& groups, int64_t batch) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  auto rng = sample_rng(seed, 0, static_cast<uint64_t>(epoch), 0);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[static_cast<size_t>(rng() % i)]);
  if (groups.empty()) return order;
  if (groups.size() != n) throw std::logic_error("epoch_order: one group per sample");
  std::map<int64_t, std::vector<int64_t>> by_group;  // each in the shuffled order
  for (int64_t i : order) by_group[groups[static_cast<size_t>(i)]].push_back(i);
  std::vector<std::vector<int64_t>> batches;
  std::vector<int64_t> rest;
  for (auto& [group, members] : by_group) {
    size_t k = 0;
    for (; k + static_cast<size_t>(batch) <= members.size(); k += static_cast<size_t>(batch)) {
      batches.emplace_back(members.begin() + static_cast<std::ptrdiff_t>(k), members.begin() + static_cast<std::ptrdiff_t>(k) + batch);
    }
    rest.insert(rest.end(), members.begin() + static_cast<std::ptrdiff_t>(k), members.end());
  }
  for (size_t i = batches.size(); i > 1; --i) std::swap(batches[i - 1], batches[static_cast<size_t>(rng() % i)]);
  std::vector<int64_t> out;
  for (const auto& b : batches) out.insert(out.end(), b.begin(), b.end());
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

void output_dir_claim(const std::string& dir, bool resume) {
  std::error_code ec;
  if (!resume) {
    if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
      fail("{}: the output folder holds another run's files; train into a new folder, or continue that run with --resume", dir);
    }
  } else if (list_checkpoints(dir).empty()) {
    fail("{}: --resume, but there is no complete checkpoint (checkpoint-N) here to continue from", dir);
  }
}

// Keys of the saved and the current config that differ, but for those that do not change
// what the saved steps computed: where and how often to write, loader threads, and the
// run's length (max_steps, epochs: a run may be extended; run_resume says so).
std::string config_changes(json saved, json now) {
  std::string changed;
  for (json* c : {&saved, &now}) {
    for (const char* key : {"output_dir", "workers", "save_steps", "save_total_limit", "log_steps", "max_steps", "epochs"}) c->erase(key);
  }
  for (const auto& [key, value] : now.items()) {
    if (!saved.contains(key) || saved[key] != value) changed += (changed.empty() ? "" : ", ") + key;
  }
  for (const auto& [key, value] : saved.items()) {
    if (!now.contains(key)) changed += (changed.empty() ? "" : ", ") + key;
  }
  return changed;
}

// Complete checkpoints in `dir`, by step; stale ".partial" folders are removed.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!fs::exists(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0) continue;
    if (name.size() > 8 && name.compare(name.size() - 8, 8, ".partial") == 0) continue;
    try {
      out.emplace_back(std::stoll(name.substr(11)), entry.path().string());
    } catch (const std::exception&) {}
  }
  std::sort(out.begin(), out.end());
  return out;
}

void copy_tokenizer_files(const std::string& from, const std::string& to) {
  for (const char* name : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"}) {
    if (fs::exists(from + "/" + name)) fs::copy_file(from + "/" + name, to + "/" + name, fs::copy_options::overwrite_existing);
  }
}

void save_model_weights(torch::nn::Module& model, const std::string& path) {
  std::vector<std::pair<std::string, at::Tensor>> weights;
  for (const auto& item : model.named_parameters()) weights.emplace_back(item.key(), item.value().detach());
  // and the buffers, as PyTorch's state_dict: BatchNorm running statistics of a DCFormer.
  for (const auto& item : model.named_buffers()) weights.emplace_back(item.key(), item.value().detach());
  io::safetensors_save(path, weights, {{"format", "pt"}});
}

torch::Tensor load_model_volume(const std::string& path, int64_t channels, const std::vector<int64_t>& size) {
  torch::Tensor image = imaging::model_input_load(path);  // (1, C, D, H, W)
  if (image.size(1) != channels) fail("{}: {} channels, the model takes {}", path, image.size(1), channels);
  if (image.sizes().slice(2).vec() != size) image = torch::upsample_trilinear3d(image, size, false);  // to the model grid
  return image.squeeze(0).contiguous();  // (C, D, H, W)
}

const std::vector<std::string>& TrainSchedule::schedule_keys() {
  static const std::vector<std::string> keys = {"epochs",
                                                "max_steps",
                                                "batch_size",
                                                "grad_accum",
                                                "lr",
                                                "weight_decay",
                                                "warmup_ratio",
                                                "max_grad_norm",
                                                "seed",
                                                "output_dir",
                                                "save_steps",
                                                "save_total_limit",
                                                "log_steps",
                                                "eval_fraction",
                                                "workers",
                                                "bf16",
                                                "gradient_checkpointing",
                                                "ddp_bucket_cap_mb"};
  return keys;
}

void TrainSchedule::read_schedule(const json& c, const std::string& where) {
  epochs = c.value("epochs", epochs);
  max_steps = c.value("max_steps", max_steps);
  batch_size = c.value("batch_size", batch_size);
  grad_accum = c.value("grad_accum", grad_accum);
  lr = c.value("lr", lr);
  weight_decay = c.value("weight_decay", weight_decay);
  warmup_ratio = c.value("warmup_ratio", warmup_ratio);
  max_grad_norm = c.value("max_grad_norm", max_grad_norm);
  seed = c.value("seed", seed);
  output_dir = c.value("output_dir", output_dir);
  save_steps = c.value("save_steps", save_steps);
  save_total_limit = c.value("save_total_limit", save_total_limit);
  log_steps = c.value("log_steps", log_steps);
  eval_fraction = c.value("eval_fraction", eval_fraction);
  workers = c.value("workers", workers);
  bf16 = c.value("bf16", bf16);
  gradient_checkpointing = c.value("gradient_checkpointing", gradient_checkpointing);
  ddp_bucket_cap_mb = c.value("ddp_bucket_cap_mb", ddp_bucket_cap_mb);
  if (!(ddp_bucket_cap_mb > 0)) fail("{}: ddp_bucket_cap_mb must be positive", where);
  if (batch_size < 1 || grad_accum < 1 || workers < 1) fail("{}: batch_size, grad_accum and workers must be at least 1", where);
  if (lr <= 0 || warmup_ratio < 0 || warmup_ratio > 1 || weight_decay < 0 || max_grad_norm <= 0) {
    fail("{}: lr and max_grad_norm must be positive, warmup_ratio in [0, 1], weight_decay non-negative", where);
  }
  if (max_steps <= 0 && epochs <= 0) fail("{}: give epochs or max_steps", where);
  if (max_steps == 0 || max_steps < -1) fail("{}: max_steps must be at least 1 (or -1: run the given epochs), got {}", where, max_steps);
  if (save_steps < 1 || log_steps < 1) fail("{}: save_steps and log_steps must be at least 1, got {} and {}", where, save_steps, log_steps);
  if (save_total_limit < 0) fail("{}: save_total_limit must be 0 (keep every checkpoint) or more, got {}", where, save_total_limit);
  if (!(eval_fraction >= 0 && eval_fraction <= 1)) fail("{}: eval_fraction must be in [0, 1] (0: never evaluate), got {}", where, eval_fraction);
}

json TrainSchedule::schedule_json() const {
  return {{"epochs", epochs},
          {"max_steps", max_steps},
          {"batch_size", batch_size},
          {"grad_accum", grad_accum},
          {"lr", lr},
          {"weight_decay", weight_decay},
          {"warmup_ratio", warmup_ratio},
          {"max_grad_norm", max_grad_norm},
          {"seed", seed},
          {"output_dir", output_dir},
          {"save_steps", save_steps},
          {"save_total_limit", save_total_limit},
          {"log_steps", log_steps},
          {"eval_fraction", eval_fraction},
          {"workers", workers},
          {"bf16", bf16},
          {"gradient_checkpointing", gradient_checkpointing},
          {"ddp_bucket_cap_mb", ddp_bucket_cap_mb}};
}

LoopSettings TrainSchedule::loop_settings(size_t dataset_size, int world_size, json config) const {
  const int64_t G = batch_size * world_size * grad_accum;
  LoopSettings s;
  s.steps_per_epoch = static_cast<int64_t>(dataset_size) / G;
  if (s.steps_per_epoch == 0) {
    fail("training: the global batch ({} = {} x {} ranks x {} accumulation) exceeds the {} training samples", G, batch_size, world_size, grad_accum,
         dataset_size);
  }
  s.total_steps = max_steps > 0 ? max_steps : epochs * s.steps_per_epoch;
  s.output_dir = output_dir;
  s.dataset_size = dataset_size;
  s.seed = seed;
  s.batch_size = batch_size;
  s.grad_accum = grad_accum;
  s.lr = lr;
  s.warmup_ratio = warmup_ratio;
  s.max_grad_norm = max_grad_norm;
  s.save_steps = save_steps;
  s.save_total_limit = save_total_limit;
  s.log_steps = log_steps;
  s.eval_every = eval_fraction > 0 ? std::max<int64_t>(1, static_cast<int64_t>(std::ceil(static_cast<double>(s.total_steps) * eval_fraction))) : 0;
  s.workers = workers;
  s.bf16 = bf16;
  s.bucket_mb = ddp_bucket_cap_mb;
  s.config = std::move(config);
  return s;
}

namespace {

// What the steps of one training_loop call share.
struct Run {
  const LoopSettings& s;
  torch::nn::Module& model;
  AdamW& optimizer;
  Communicator* comm;
  const DistEnv& env;
  const LoopHooks& hooks;
  const TrainRunOptions& options;
  bool main_rank;
  int64_t B, W, A, G;  // per-rank batch, ranks, accumulation, global batch
  std::string log_path;  // metrics.jsonl
};

// Drops the log lines written after the checkpoint at step `last`.
void log_truncate_after(const std::string& log_path, int64_t last) {
  std::ifstream in(log_path);
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (json::parse(line).value("step", int64_t{0}) <= last) kept += line + "\n";
    } catch (const json::exception&) {}
  }
  in.close();
  io::write_file_atomic(log_path, kept);
}

// With --resume: the newest complete checkpoint's weights, AdamW moments and this
// rank's random state, after checking it was saved by the same config. Returns its
// step (0 without one).
int64_t run_resume(const Run& r) {
  const LoopSettings& s = r.s;
  if (!r.options.resume) return 0;
  const auto checkpoints = list_checkpoints(s.output_dir);
  if (checkpoints.empty()) return 0;
  const auto& [last, dir] = checkpoints.back();
  const json state = io::json_read_file(dir + "/trainer_state.json");
  if (const std::string changed = config_changes(state.value("train_config", json::object()), s.config); !changed.empty()) {
    fail("{}: --resume with another config than the run it continues (changed: {}); resume with the same settings or train into a new folder", dir, changed);
  }
  if (state.value("global_batch", r.G) != r.G) {
    fail("{}: saved with a global batch of {}, this run has {}: the data order would differ", dir, state.value("global_batch", r.G), r.G);
  }
  if (s.total_steps < last) fail("{}: the run is at step {}, past the {} steps asked for; give more steps to continue it", dir, last, s.total_steps);
  const int64_t saved_total = state.value("total_steps", s.total_steps);
  if (saved_total != s.total_steps && r.main_rank) {
    // As HF Trainer resumed with a new max_steps: warmup and cosine span the new total from here on.
    spdlog::info("{}: the schedule is {} from {} to {} steps: from step {} the learning rate follows the cosine over {} steps", dir,
                 saved_total < s.total_steps ? "extended" : "shortened", saved_total, s.total_steps, last, s.total_steps);
  }
  const io::Checkpoint weights = io::checkpoint_open(dir + "/model.safetensors");
  io::state_dict_load(r.model, weights);
  const io::Checkpoint moments = io::checkpoint_open(dir + "/optimizer.safetensors");
  std::map<std::string, torch::Tensor> saved;
  for (const auto& [name, record] : moments.tensors) saved[name] = io::tensor_from_record(record).clone();
  r.optimizer.load_state(saved, dir + "/optimizer.safetensors");
  const std::string rng = fmt::format("{}/rng_state_{}.safetensors", dir, r.env.rank);
  if (!fs::exists(rng)) fail("{}: no random state for rank {} (saved by {} ranks)", dir, r.env.rank, state.value("world_size", 1));
  const io::Checkpoint rng_state = io::checkpoint_open(rng);
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
  generator.set_state(io::tensor_from_record(rng_state.tensor("cpu")).clone());
  if (r.main_rank && fs::exists(r.log_path)) log_truncate_after(r.log_path, last);
  if (r.main_rank && r.options.progress) spdlog::info("resuming from {} (step {} of {})", dir, last, s.total_steps);
  return last;
}

// checkpoint-<at_step>: written into a .partial folder by every rank, then renamed
// (the checkpoint appears complete or not at all); the oldest beyond save_total_limit go.
void run_save(const Run& r, int64_t at_step, TrainResult& result) {
  const LoopSettings& s = r.s;
  const std::string final_dir = s.output_dir + "/" + checkpoint_name(at_step), partial = final_dir + ".partial";
  if (r.main_rank) {
    fs::remove_all(partial);
    fs::create_directories(partial);
  }
  if (r.comm) r.comm->barrier();
  // Each rank's dropout generator, as HF Trainer's rng_state_<rank>.pth.
  io::safetensors_save(fmt::format("{}/rng_state_{}.safetensors", partial, r.env.rank), {{"cpu", at::detail::getDefaultCPUGenerator().get_state()}});
  if (r.comm) r.comm->barrier();
  if (r.main_rank) {
    save_model_weights(r.model, partial + "/model.safetensors");
    io::safetensors_save(partial + "/optimizer.safetensors", r.optimizer.state());
    if (r.hooks.save_files) r.hooks.save_files(partial);
    const json state = {{"global_step", at_step},
                        {"total_steps", s.total_steps},
                        {"epoch", static_cast<double>(at_step) / static_cast<double>(s.steps_per_epoch)},
                        {"global_batch", r.G},
                        {"world_size", r.W},
                        {"train_config", s.config}};
    {
      io::AtomicFile file(partial + "/trainer_state.json");
      const std::string text = state.dump(2) + "\n";
      file.write(text.data(), text.size());
      file.commit();
    }
    if (const char* delay = std::getenv("M3D_TEST_SLOW_SAVE_MS")) {  // fault injection for the kill-during-save test
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(delay)));
    }
    if (fs::exists(final_dir)) fs::remove_all(final_dir);
    fs::rename(partial, final_dir);  // the checkpoint appears complete or not at all
    result.checkpoint = final_dir;
    auto checkpoints = list_checkpoints(s.output_dir);
    while (s.save_total_limit > 0 && static_cast<int64_t>(checkpoints.size()) > s.save_total_limit) {
      fs::remove_all(checkpoints.front().second);
      checkpoints.erase(checkpoints.begin());
    }
  }
  if (r.comm) r.comm->barrier();
}

// Micro-batches are prepared ahead on `workers` threads, in step order.
class Prefetcher {
 public:
  Prefetcher(const Run& r, int64_t first_step) : r_(r), next_step_(first_step) {}

  Batch next() {
    fill();
    Batch batch = queue_.front().get();
    queue_.pop_front();
    return batch;
  }
  void wait_all() {
    for (auto& pending : queue_) pending.wait();
  }

 private:
  // This rank's sample indices of micro-batch m of step `at`.
  std::vector<int64_t> micro_indices(int64_t at, int64_t m) {
    const LoopSettings& s = r_.s;
    const int64_t epoch = at / s.steps_per_epoch, k = at % s.steps_per_epoch;
    if (order_cache_.first != epoch) order_cache_ = {epoch, epoch_order(s.dataset_size, s.seed, epoch, s.groups, r_.G)};
    const auto first = order_cache_.second.begin() + k * r_.G + (m * r_.W + r_.env.rank) * r_.B;
    return std::vector<int64_t>(first, first + r_.B);
  }
  void fill() {
    const LoopSettings& s = r_.s;
    while (static_cast<int64_t>(queue_.size()) < s.workers + 1 && next_step_ < s.total_steps) {
      const int64_t at = next_step_, m = next_micro_, epoch = at / s.steps_per_epoch;
      const auto indices = micro_indices(at, m);
      const LoopHooks* hooks = &r_.hooks;
      queue_.push_back(std::async(std::launch::async, [hooks, indices, epoch] { return hooks->load(indices, epoch); }));
      if (++next_micro_ == r_.A) next_micro_ = 0, ++next_step_;
    }
  }

  const Run& r_;
  std::pair<int64_t, std::vector<int64_t>> order_cache_{-1, {}};
  std::deque<std::future<Batch>> queue_;
  int64_t next_step_, next_micro_ = 0;
};

// The forward and backward passes of one step's A micro-batches (the gradients summed
// across ranks while the last backward runs); returns the step's loss.
double run_accumulate(const Run& r, Prefetcher& batches, OverlappedGradientSum* gradient_sum, c10::DeviceType device) {
  double loss_value = 0;
  for (int64_t m = 0; m < r.A; ++m) {
    Batch batch = batches.next();
    torch::Tensor loss;
    {
      models::AutocastGuard autocast(r.s.bf16, device);
      loss = r.hooks.loss(batch) / static_cast<double>(r.A);
    }
    if (gradient_sum && m == r.A - 1) gradient_sum->arm();
    loss.backward();
    loss_value += loss.item<double>();
  }
  if (gradient_sum) gradient_sum->finish();
  return loss_value;
}

// Whether any rank was asked to stop (all ranks stop together).
bool run_stop_requested(const Run& r) {
  bool stop = r.options.stop != nullptr && r.options.stop->load();
  if (r.comm) {
    auto flag = torch::tensor({stop ? 1.0f : 0.0f});
    r.comm->all_reduce_sum({flag});
    stop = flag.item<float>() > 0;
  }
  return stop;
}

// hooks.evaluate on the main rank, logged; the other ranks wait for it.
void run_evaluate(const Run& r, int64_t step, TrainResult& result, io::AppendFile* log, Progress& progress) {
  if (r.main_rank && r.hooks.evaluate) {
    result.last_eval = r.hooks.evaluate();
    log->append_line(json{{"step", step}, {"eval", result.last_eval}}.dump());
    if (r.options.progress) {
      progress.finish();
      spdlog::info("step {} eval {}", step, result.last_eval.dump());
    }
  }
  if (r.comm) r.comm->barrier();
}

}  // namespace

TrainResult training_loop(const LoopSettings& s, torch::nn::Module& model, AdamW& optimizer, Communicator* comm, const DistEnv& env, const LoopHooks& hooks,
                          const TrainRunOptions& options) {
  const int64_t B = s.batch_size, W = env.world_size, A = s.grad_accum;
  const Run r{s, model, optimizer, comm, env, hooks, options, env.is_main(), B, W, A, B * W * A, s.output_dir + "/metrics.jsonl"};
  const int64_t total = s.total_steps, G = r.G;
  const auto& parameters = optimizer.parameters();
  const auto device = parameters.empty() ? c10::DeviceType::CPU : parameters.front().tensor.device().type();
  const int64_t warmup = warmup_steps(total, s.warmup_ratio), eval_every = s.eval_every;
  int64_t step = run_resume(r);
  if (r.main_rank) {
    for (const auto& entry : fs::directory_iterator(s.output_dir)) {  // half-written checkpoints of a killed run
      if (entry.path().extension() == ".partial") fs::remove_all(entry.path());
    }
    io::write_file_atomic(s.output_dir + "/train_config.json", s.config.dump(2) + "\n");
  }

  // metrics.jsonl on the main rank, synced before each checkpoint so a checkpoint's log is on disk.
  std::unique_ptr<io::AppendFile> log;
  if (r.main_rank) log = std::make_unique<io::AppendFile>(r.log_path, "the training log");
  TrainResult result;
  result.total_steps = total;
  Prefetcher batches(r, step);
  std::unique_ptr<OverlappedGradientSum> gradient_sum;
  if (comm) {
    std::vector<torch::Tensor> tensors;
    for (const auto& p : parameters) tensors.push_back(p.tensor);
    gradient_sum = std::make_unique<OverlappedGradientSum>(*comm, tensors, s.bucket_mb);
  }
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  Progress progress("m3d train", total, r.main_rank && options.progress, first_step);
  while (step < total) {
    const double loss_value = run_accumulate(r, batches, gradient_sum.get(), device);
    const double grad_norm = clip_grad_norm(parameters, s.max_grad_norm);
    const double lr = s.lr * cosine_with_warmup(step, warmup, total);
    optimizer.step(lr);
    optimizer.zero_grad();
    ++step;
    result.steps = step;

    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double per_step = elapsed / static_cast<double>(step - first_step);
    if (r.main_rank && (step % s.log_steps == 0 || step == total)) {
      const json record = {{"step", step},           {"epoch", static_cast<double>(step) / static_cast<double>(s.steps_per_epoch)},
                           {"loss", loss_value},     {"lr", lr},
                           {"grad_norm", grad_norm}, {"samples_per_s", static_cast<double>(G) / per_step},
                           {"elapsed_s", elapsed}};
      log->append_line(record.dump());
    }
    progress.update(step, fmt::format("loss {:.4f}  lr {:.2e}  {:.1f} samples/s", loss_value, lr, static_cast<double>(G) / per_step));
    const bool stop = run_stop_requested(r);
    if (eval_every > 0 && (step % eval_every == 0 || step == total)) run_evaluate(r, step, result, log.get(), progress);
    if (step % s.save_steps == 0 || step == total || stop) {
      if (log) log->sync();
      run_save(r, step, result);
    }
    if (stop) {
      result.stopped = true;
      if (r.main_rank && options.progress) {
        progress.finish();
        spdlog::info("stopped at step {}; --resume continues", step);
      }
      break;
    }
  }
  batches.wait_all();
  progress.finish();
  return result;
}

std::string training_recipe_text(const std::string& init, const std::array<int64_t, 3>& grid) {
  if (!init.empty() && std::filesystem::exists(init + "/m3d_recipe.json")) {
    return imaging::recipe_to_json(imaging::recipe_load(init + "/m3d_recipe.json")) + "\n";
  }
  imaging::Recipe recipe = imaging::recipe_builtin("m3d-lamed");
  if (recipe.ops.back().params.at("size") == nlohmann::json(grid)) return "";
  recipe.name = fmt::format("m3d-lamed-{}x{}x{}", grid[0], grid[1], grid[2]);
  recipe.source = "m3d train: " + recipe.source + ", then Resize to the model grid as the training loader resizes M3D-Data volumes";
  recipe.ops.push_back({"resize", {{"size", grid}, {"mode", "trilinear"}}});
  return imaging::recipe_to_json(recipe) + "\n";
}

}  // namespace m3d::train
