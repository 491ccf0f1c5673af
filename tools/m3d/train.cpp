// m3d train clip: contrastive pre-training (M3D-CLIP, sigmoid loss); m3d train lamed:
// LaMed instruction tuning. Each runs on one process,
// as one rank of a torchrun-style launch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
// or spawning --nproc local ranks; m3d train eval: retrieval recall of a checkpoint.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <cstdio>
#include <fstream>
#include <vector>

#include "commands.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "options.h"
#include "train/clip_train.h"
#include "train/lamed_train.h"
#include "train/distributed.h"

namespace m3d::cli {
namespace {

std::atomic<bool> g_stop{false};
std::vector<pid_t> g_children;

void on_signal(int) {
  g_stop.store(true);
  for (pid_t child : g_children) ::kill(child, SIGTERM);
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    fail("m3d train: cannot find a free local port for the ranks");
  }
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

// Re-runs this command line (without --nproc) as `n` local ranks and waits for all.
int spawn_ranks(int n, const std::vector<std::string>& args) {
  const std::string port = std::to_string(free_port());
  for (int rank = 0; rank < n; ++rank) {
    const pid_t pid = ::fork();
    if (pid < 0) fail("m3d train: fork failed");
    if (pid == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::perror("m3d train: exec");
      ::_exit(127);
    }
    g_children.push_back(pid);
  }
  int failures = 0;
  for (size_t done = 0; done < g_children.size(); ++done) {
    int status = 0;
    const pid_t pid = ::wait(&status);
    if (pid < 0) break;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failures;
      for (pid_t child : g_children) {
        if (child != pid) ::kill(child, SIGTERM);  // one rank failed: the others cannot finish
      }
    }
  }
  return failures == 0 ? 0 : 1;
}

struct TrainArgs {
  std::string preset, config_file, data, output, init, text_init, vision_init;
  std::vector<std::string> set;
  bool resume = false, quiet = false;
  int nproc = 0;
  int64_t max_steps = -1;
};

// The preset, then --config's fields, then the flags, then each --set.
nlohmann::json assemble_config(const TrainArgs& a, const std::function<nlohmann::json(const std::string&)>& preset) {
  nlohmann::json config = a.preset.empty() ? nlohmann::json::object() : preset(a.preset);
  if (!a.config_file.empty()) {
    const nlohmann::json file = io::json_read_file(a.config_file);  // kept alive: items() refers into it
    for (const auto& [key, value] : file.items()) config[key] = value;
  }
  if (!a.data.empty()) config["data"] = a.data;
  if (!a.output.empty()) config["output_dir"] = a.output;
  if (!a.init.empty()) config["init"] = a.init, config.erase("model");
  if (!a.text_init.empty()) config["text_init"] = a.text_init;
  if (!a.vision_init.empty()) config["vision_init"] = a.vision_init;
  if (a.max_steps > 0) config["max_steps"] = a.max_steps;
  for (const auto& assignment : a.set) {
    const size_t eq = assignment.find('=');
    if (eq == std::string::npos) fail("--set '{}': expected key=value", assignment);
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(assignment.substr(eq + 1));
    } catch (const nlohmann::json::exception&) {
      value = assignment.substr(eq + 1);  // a bare string
    }
    config[assignment.substr(0, eq)] = value;
  }
  return config;
}

// Re-runs this command line without --nproc as `nproc` ranks.
void run_as_ranks(int nproc) {
  std::vector<std::string> args;
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  for (std::string arg; std::getline(cmdline, arg, '\0');) args.push_back(arg);
  for (size_t i = 0; i < args.size(); ++i) {  // drop --nproc N / --nproc=N
    if (args[i] == "--nproc" && i + 1 < args.size()) {
      args.erase(args.begin() + static_cast<std::ptrdiff_t>(i), args.begin() + static_cast<std::ptrdiff_t>(i) + 2);
      --i;
    } else if (args[i].rfind("--nproc=", 0) == 0) {
      args.erase(args.begin() + static_cast<std::ptrdiff_t>(i));
      --i;
    }
  }
  ::signal(SIGTERM, on_signal);
  ::signal(SIGINT, on_signal);
  if (spawn_ranks(nproc, args) != 0) fail("m3d train: a rank failed (see its messages above)");
}

using Trainer = std::function<train::TrainResult(const nlohmann::json& config, const std::string& where, const train::TrainRunOptions& run)>;

// `m3d train NAME` with the options every trainer shares.
CLI::App* add_trainer(CLI::App* cmd, const std::string& name, const std::string& help, const std::string& presets, const std::string& data_help,
                      const std::string& init_help, std::function<nlohmann::json(const std::string&)> preset, Trainer trainer,
                      const std::shared_ptr<TrainArgs>& a) {
  CLI::App* sub = cmd->add_subcommand(name, help);
  sub->add_option("--preset", a->preset, presets);
  sub->add_option("--config", a->config_file, "A JSON training config (fields: docs/training.md); applied over the preset");
  sub->add_option("--data", a->data, data_help);
  sub->add_option("-o,--output", a->output, "Output folder: checkpoints, metrics.jsonl");
  sub->add_option("--init", a->init, init_help);
  sub->add_option("--set", a->set, "Override a config field: key=JSON value (e.g. --set batch_size=16 --set lr=5e-5)");
  sub->add_option("--max-steps", a->max_steps, "Stop after this many optimizer steps (the schedule spans them)");
  sub->add_flag("--resume", a->resume, "Continue from the newest complete checkpoint in the output folder");
  sub->add_option("--nproc", a->nproc, "Spawn this many local ranks (data parallel, Gloo)");
  sub->add_flag("-q,--quiet", a->quiet, "No progress bar");
  sub->callback([a, name, preset, trainer] {
    const nlohmann::json config = assemble_config(*a, preset);
    if (!config.contains("data")) fail("m3d train {}: give --data (an M3D-Data folder, e.g. from m3d synth)", name);
    if (!config.contains("output_dir") || !config["output_dir"].is_string()) fail("m3d train {}: give the output folder with -o", name);
    if (train::DistEnv::from_environment().world_size == 1) train::output_dir_claim(config["output_dir"], a->resume);  // not again in each rank
    if (a->nproc > 1) return run_as_ranks(a->nproc);
    ::signal(SIGTERM, on_signal);
    ::signal(SIGINT, on_signal);
    train::TrainRunOptions run;
    run.resume = a->resume;
    run.progress = !a->quiet;
    run.stop = &g_stop;
    const auto result = trainer(config, a->config_file.empty() ? "the training config" : a->config_file, run);
    if (train::DistEnv::from_environment().is_main()) {
      std::printf("%s after %lld of %lld steps: %s\n", result.stopped ? "stopped" : "done", static_cast<long long>(result.steps),
                  static_cast<long long>(result.total_steps), result.checkpoint.c_str());
      if (!result.last_eval.is_null()) std::printf("eval: %s\n", result.last_eval.dump().c_str());
    }
    if (result.stopped) {  // saved, but not finished: scripts must not take it for a complete run
      std::fflush(stdout);
      std::exit(train::kExitStopped);
    }
  });
  return sub;
}

}  // namespace

void add_train(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("train", "Train models: contrastive CLIP / SigLIP pre-training, LaMed instruction tuning");
  cmd->require_subcommand(1);

  auto c = std::make_shared<TrainArgs>();
  CLI::App* clip = add_trainer(
      cmd, "clip", "Contrastive image-report pre-training of M3D-CLIP (nce or sigmoid loss) or DCFormer_SigLIP",
      "m3d-clip | siglip | tiny | med3dvlm-siglip | med3dvlm-tiny", "Folder with M3D_Cap_npy/M3D_Cap.json (e.g. from m3d synth)",
      "Start from this M3D-CLIP or DCFormer_SigLIP checkpoint", train::clip_train_preset,
      [](const nlohmann::json& config, const std::string& where, const train::TrainRunOptions& run) {
        return train::clip_train(train::ClipTrainConfig::from_json(config, where), run);
      },
      c);
  clip->add_option("--text-init", c->text_init,
                   "BERT-family checkpoint for the text tower (official: bert-base-uncased; DCFormer_SigLIP: medicalai/ClinicalBERT)");

  auto l = std::make_shared<TrainArgs>();
  CLI::App* lamed = add_trainer(
      cmd, "lamed", "LaMed instruction tuning: stage 1 (projector), stage 2 (LoRA), or a small LaMed in full", "stage1 | stage2 | tiny",
      "M3D-Data folder: M3D_Cap_npy, M3D-VQA (e.g. from m3d synth)", "Start from this LaMed checkpoint", train::lamed_train_preset,
      [](const nlohmann::json& config, const std::string& where, const train::TrainRunOptions& run) {
        return train::lamed_train(train::LamedTrainConfig::from_json(config, where), run);
      },
      l);
  lamed->add_option("--vision-init", l->vision_init, "M3D-CLIP checkpoint whose vision encoder initialises the ViT (pretrain_vision_model)");

  struct EvalArgs {
    std::string model, data, split = "test";
    int64_t limit = 100;
  };
  auto e = std::make_shared<EvalArgs>();
  CLI::App* eval = cmd->add_subcommand("eval", "Image-text retrieval recall@1/5/10 of a CLIP checkpoint on an M3D-Cap split");
  add_model_option(eval, e->model, "M3D-CLIP or DCFormer_SigLIP");
  eval->add_option("--data", e->data, "Folder with M3D_Cap_npy/M3D_Cap.json")->required();
  eval->add_option("--split", e->split, "Split")->capture_default_str();
  eval->add_option("--limit", e->limit, "Score the first N pairs (recall among N candidates)")->capture_default_str();
  eval->callback([e] { std::printf("%s\n", train::clip_evaluate(e->model, e->data, e->split, e->limit).dump(2).c_str()); });
}

}  // namespace m3d::cli
