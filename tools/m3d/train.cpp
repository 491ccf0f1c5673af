// m3d train clip: contrastive pre-training (M3D-CLIP, sigmoid loss) on one process,
// as one rank of a torchrun-style launch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
// or spawning --nproc local ranks; m3d train eval: retrieval recall of a checkpoint.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <vector>

#include "commands.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "train/clip_train.h"
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
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
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

}  // namespace

void add_train(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("train", "Train models (contrastive CLIP / SigLIP pre-training)");
  cmd->require_subcommand(1);

  struct ClipArgs {
    std::string preset, config_file, data, output, init, text_init;
    std::vector<std::string> set;
    bool resume = false, quiet = false;
    int nproc = 0;
    int64_t max_steps = -1;
  };
  auto a = std::make_shared<ClipArgs>();
  CLI::App* clip = cmd->add_subcommand("clip", "Contrastive image-report pre-training of M3D-CLIP (nce) or the sigmoid loss");
  clip->add_option("--preset", a->preset, "m3d-clip | siglip | tiny");
  clip->add_option("--config", a->config_file, "A JSON training config (fields: docs/training.md); applied over the preset");
  clip->add_option("--data", a->data, "Folder with M3D_Cap_npy/M3D_Cap.json (e.g. from m3d synth)");
  clip->add_option("-o,--output", a->output, "Output folder: checkpoints, metrics.jsonl");
  clip->add_option("--init", a->init, "Start from this M3D-CLIP checkpoint");
  clip->add_option("--text-init", a->text_init, "BERT checkpoint for the text tower (official: bert-base-uncased)");
  clip->add_option("--set", a->set, "Override a config field: key=JSON value (e.g. --set batch_size=16 --set lr=5e-5)");
  clip->add_option("--max-steps", a->max_steps, "Stop after this many optimizer steps (the schedule spans them)");
  clip->add_flag("--resume", a->resume, "Continue from the newest complete checkpoint in the output folder");
  clip->add_option("--nproc", a->nproc, "Spawn this many local ranks (data parallel, Gloo)");
  clip->add_flag("-q,--quiet", a->quiet, "No progress bar");
  clip->callback([a] {
    if (a->nproc > 1) {
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
      if (spawn_ranks(a->nproc, args) != 0) fail("m3d train: a rank failed (see its messages above)");
      return;
    }
    nlohmann::json config = a->preset.empty() ? nlohmann::json::object() : train::clip_train_preset(a->preset);
    if (!a->config_file.empty()) {
      const nlohmann::json file = io::json_read_file(a->config_file);  // kept alive: items() refers into it
      for (const auto& [key, value] : file.items()) config[key] = value;
    }
    if (!a->data.empty()) config["data"] = a->data;
    if (!a->output.empty()) config["output_dir"] = a->output;
    if (!a->init.empty()) config["init"] = a->init, config.erase("model");
    if (!a->text_init.empty()) config["text_init"] = a->text_init;
    if (a->max_steps > 0) config["max_steps"] = a->max_steps;
    for (const auto& assignment : a->set) {
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
    if (!config.contains("data")) fail("m3d train clip: give --data (a folder with M3D_Cap_npy/M3D_Cap.json)");
    if (!config.contains("output_dir")) fail("m3d train clip: give the output folder with -o");
    const auto parsed = train::ClipTrainConfig::from_json(config, a->config_file.empty() ? "the training config" : a->config_file);
    ::signal(SIGTERM, on_signal);
    ::signal(SIGINT, on_signal);
    train::TrainRunOptions run;
    run.resume = a->resume;
    run.progress = !a->quiet;
    run.stop = &g_stop;
    const auto result = train::clip_train(parsed, run);
    if (train::DistEnv::from_environment().is_main()) {
      std::printf("%s after %lld of %lld steps: %s\n", result.stopped ? "stopped" : "done", static_cast<long long>(result.steps),
                  static_cast<long long>(result.total_steps), result.checkpoint.c_str());
      if (!result.last_eval.is_null()) std::printf("eval: %s\n", result.last_eval.dump().c_str());
    }
  });

  struct EvalArgs {
    std::string model, data, split = "test";
    int64_t limit = 100;
  };
  auto e = std::make_shared<EvalArgs>();
  CLI::App* eval = cmd->add_subcommand("eval", "Image-text retrieval recall@1/5/10 of a CLIP checkpoint on an M3D-Cap split");
  eval->add_option("--model", e->model, "CLIP checkpoint folder")->required();
  eval->add_option("--data", e->data, "Folder with M3D_Cap_npy/M3D_Cap.json")->required();
  eval->add_option("--split", e->split, "Split")->capture_default_str();
  eval->add_option("--limit", e->limit, "Score the first N pairs (recall among N candidates)")->capture_default_str();
  eval->callback([e] { std::printf("%s\n", train::clip_evaluate(e->model, e->data, e->split, e->limit).dump(2).c_str()); });
}

}  // namespace m3d::cli
