// Data-parallel training over libtorch's c10d: a TCPStore rendezvous at
// MASTER_ADDR:MASTER_PORT and a Gloo process group (CPU tensors; CUDA tensors are
// staged through the host). Launched like torchrun: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT in the environment, or by `m3d train --nproc N`, which
// spawns the local ranks itself. The c10d types stay inside distributed.cpp.
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

namespace m3d::train {

struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // From RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; a single process
  // when WORLD_SIZE is unset. Throws for inconsistent values.
  static DistEnv from_environment();
  bool is_main() const { return rank == 0; }
};

class Communicator {
 public:
  // Joins the group (blocks until every rank has joined, or `timeout_s`).
  Communicator(const DistEnv& env, double timeout_s = 300);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  // Sums the tensors in place across ranks, packed into buckets of ~`bucket_mb`.
  void all_reduce_sum(const std::vector<torch::Tensor>& tensors, double bucket_mb = 25);
  // Every rank's `local` (same shape everywhere) concatenated along dim 0 in rank order.
  torch::Tensor all_gather(const torch::Tensor& local);
  void broadcast(torch::Tensor& tensor, int root = 0);
  void barrier();

 private:
  friend class OverlappedGradientSum;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DistEnv env_;
};

// Sums parameter gradients across ranks (as all_reduce_sum) while the backward is still
// running: the parameters are cut into ~bucket_mb buckets in reverse order (the order a
// backward produces their gradients), and a bucket is sent, asynchronously, as soon as every
// gradient in it has been accumulated and the buckets before it have been sent. So every
// rank sends the same buckets in the same order; what the backward has not produced by its
// end is sent by finish().
class OverlappedGradientSum {
 public:
  OverlappedGradientSum(Communicator& comm, const std::vector<torch::Tensor>& parameters, double bucket_mb = 25);
  ~OverlappedGradientSum();
  OverlappedGradientSum(const OverlappedGradientSum&) = delete;
  OverlappedGradientSum& operator=(const OverlappedGradientSum&) = delete;

  // Before the backward whose gradients are to be summed (the last micro-batch's).
  void arm();
  // After it: sends the buckets left, waits for all, writes the sums into the gradients.
  void finish();

  struct State;  // defined in distributed.cpp (the autograd hooks share it)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace m3d::train
