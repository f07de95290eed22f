"""Optimizer trajectories, gradient clipping and lr schedulers (float32, CPU).

Torch cases run torch.optim (1.13, single-tensor path) for STEPS steps with a learning rate that
changes every step and two parameter groups (group 1 has half the lr and no weight decay). Paddle
cases (Paddle is not installable here) are float32 trajectories computed from the kernel formulas
with numpy float32 arithmetic, one rounding per operation as Eigen evaluates them (no fma).

The gradient of step t for parameter i is a deterministic function of the parameter, so the
trajectory feeds back into the gradients like a real loss would:
    g = 0                           where noise[t][i] == 0  (about 2% of the elements)
    g = fl(fl(K * theta) + noise)   elsewhere                (K = float32(0.3))
The C++ test recomputes g with the same float32 operations.

Files (in <out>/optim/):
    noise__p{i}.npy          (STEPS, *shape_i) float32
    init__p{i}.npy           initial parameters
    <case>__lrs.npy          (STEPS,) float64: the lr of group 0 at each step (group 1: lr * 0.5)
    <case>__traj__p{i}.npy   (STEPS, *shape_i) parameters after every step
    <case>__state__p{i}__<buffer>.npy   optimizer state after the last step
    clip_*                   torch.nn.utils.clip_grad_norm_ inputs, outputs and total norms
    sched_*                  torch lr_scheduler values per epoch
"""
import math

import numpy as np
import torch

from generate import save

STEPS = 100
K = np.float32(0.3)
SHAPES = [(33, 31), (7,), (4099,)]  # 1023 elements (vector body + tail), tail only, long vector
GROUP1_LR_FACTOR = 0.5


def _lrs(base):
    t = np.arange(STEPS, dtype=np.float64)
    return base * (0.55 + 0.45 * np.cos(0.37 * t)) * (1.0 + 0.1 * np.sin(1.3 * t))


def _grad_np(theta, noise):
    g = K * theta + noise
    return np.where(noise == 0, np.float32(0), g).astype(np.float32)


def _grad_torch(p, noise):
    g = p.detach() * float(K) + noise
    return torch.where(noise == 0, torch.zeros((), dtype=torch.float32), g)


TORCH_CASES = {
    # name: (constructor, base lr, weight decay of group 0)
    "sgd": (lambda groups: torch.optim.SGD(groups, lr=0.05), 0.05, 1e-2),
    "sgd_momentum": (lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9), 0.05, 1e-2),
    "sgd_momentum_dampening": (lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, dampening=0.3),
                               0.05, 1e-2),
    "sgd_nesterov": (lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True), 0.05, 1e-2),
    "adadelta": (lambda groups: torch.optim.Adadelta(groups, lr=1.0, rho=0.9, eps=1e-6), 1.0, 1e-2),
    "adadelta_rho95": (lambda groups: torch.optim.Adadelta(groups, lr=1.0, rho=0.95, eps=1e-5), 1.0, 1e-4),
    "adam": (lambda groups: torch.optim.Adam(groups, lr=1e-2, betas=(0.9, 0.999), eps=1e-8), 1e-2, 1e-2),
    "adam_amsgrad": (lambda groups: torch.optim.Adam(groups, lr=1e-2, amsgrad=True), 1e-2, 1e-2),
    "adamw": (lambda groups: torch.optim.AdamW(groups, lr=1e-2, betas=(0.8, 0.99), eps=1e-6), 1e-2, 1e-2),
}


def _torch_case(out, name, ctor, base_lr, wd, inits, noise):
    params = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in inits]
    opt = ctor([{"params": params[:2], "weight_decay": wd}, {"params": params[2:], "weight_decay": 0.0}])
    lrs = _lrs(base_lr)
    save(out, f"{name}__lrs", lrs)
    traj = [np.zeros((STEPS,) + x.shape, dtype=np.float32) for x in inits]
    for t in range(STEPS):
        opt.param_groups[0]["lr"] = float(lrs[t])
        opt.param_groups[1]["lr"] = float(lrs[t]) * GROUP1_LR_FACTOR
        for i, p in enumerate(params):
            p.grad = _grad_torch(p, torch.from_numpy(noise[i][t]))
        opt.step()
        for i, p in enumerate(params):
            traj[i][t] = p.detach().numpy()
    for i in range(len(params)):
        save(out, f"{name}__traj__p{i}", traj[i])
        for key, value in opt.state[params[i]].items():
            if isinstance(value, torch.Tensor) and value.shape == params[i].shape:
                save(out, f"{name}__state__p{i}__{key}", value)


def _paddle_adadelta(inits, noise, rho, eps, wd, aliased):
    rho_f, eps_f = np.float32(rho), np.float32(eps)
    c = np.float32(1) - rho_f  # Paddle: 1 - rho in float32
    params = [x.copy() for x in inits]
    eg = [np.zeros_like(x) for x in inits]
    edx = [np.zeros_like(x) for x in inits]
    traj = [np.zeros((STEPS,) + x.shape, dtype=np.float32) for x in inits]
    for t in range(STEPS):
        for i, p in enumerate(params):
            g = _grad_np(p, noise[i][t])
            if wd != 0 and i < 2:  # group 1 has no weight decay
                g = g + np.float32(wd) * p
            eg[i] = rho_f * eg[i] + c * (g * g)
            upd = -(np.sqrt((edx[i] + eps_f) / (eg[i] + eps_f)) * g)
            new_edx = rho_f * edx[i] + c * (upd * upd)
            if aliased:  # the lazy Eigen update re-read after E_dx was overwritten in place
                upd = -(np.sqrt((new_edx + eps_f) / (eg[i] + eps_f)) * g)
            edx[i] = new_edx
            params[i] = (p + upd).astype(np.float32)
            traj[i][t] = params[i]
    return traj, {"avg_squared_grad": eg, "avg_squared_update": edx}


def _paddle_momentum(inits, noise, lrs, mu, nesterov, wd):
    mu_f = np.float32(mu)
    params = [x.copy() for x in inits]
    vel = [np.zeros_like(x) for x in inits]
    traj = [np.zeros((STEPS,) + x.shape, dtype=np.float32) for x in inits]
    for t in range(STEPS):
        for i, p in enumerate(params):
            lr = np.float32(lrs[t] * (1.0 if i < 2 else GROUP1_LR_FACTOR))  # lr arrives as a float32 tensor
            g = _grad_np(p, noise[i][t])
            if wd != 0 and i < 2:
                g = p * np.float32(wd) + g  # fused L2: param * coeff + grad
            vel[i] = vel[i] * mu_f + g
            if nesterov:
                params[i] = p - (g + vel[i] * mu_f) * lr
            else:
                params[i] = p - lr * vel[i]
            traj[i][t] = params[i]
    return traj, {"velocity": vel}


def _save_np_case(out, name, traj, state):
    for i, tr in enumerate(traj):
        save(out, f"{name}__traj__p{i}", tr)
        for key, bufs in state.items():
            save(out, f"{name}__state__p{i}__{key}", bufs[i])


def _clip_cases(out):
    g = torch.Generator().manual_seed(7)
    grads = [torch.randn(5, 4, generator=g), torch.randn(13, generator=g) * 3, torch.randn(2, 3, 3, generator=g)]
    total = math.sqrt(sum(float((x.double() ** 2).sum()) for x in grads))
    for tag, max_norm in (("above", total * 0.3), ("below", total * 2.0)):
        params = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
        for p, x in zip(params, grads):
            p.grad = x.clone()
        n = torch.nn.utils.clip_grad_norm_(params, max_norm)
        save(out, f"clip_{tag}__max_norm", np.array(max_norm, dtype=np.float64))
        save(out, f"clip_{tag}__total", np.array(float(n), dtype=np.float64))
        for i, (p, x) in enumerate(zip(params, grads)):
            save(out, f"clip_{tag}__grad_in{i}", x)
            save(out, f"clip_{tag}__grad_out{i}", p.grad)
    # infinity norm
    params = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
    for p, x in zip(params, grads):
        p.grad = x.clone()
    n = torch.nn.utils.clip_grad_norm_(params, 1.5, norm_type=float("inf"))
    save(out, "clip_inf__total", np.array(float(n), dtype=np.float64))
    for i, p in enumerate(params):
        save(out, f"clip_inf__grad_out{i}", p.grad)


def _sched_cases(out):
    epochs = 60
    p = torch.nn.Parameter(torch.zeros(1))

    def run(name, make):
        opt = torch.optim.SGD([p], lr=0.1)
        sched = make(opt)
        lrs = []
        for _ in range(epochs):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        save(out, f"sched_{name}", np.array(lrs, dtype=np.float64))

    run("step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5))
    run("multistep", lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 17, 40], gamma=0.3))
    run("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=25, eta_min=0.001))


def generate(out):
    gen = torch.Generator().manual_seed(20240601)
    inits, noise = [], []
    for i, shape in enumerate(SHAPES):
        x = torch.randn(shape, generator=gen) * (0.5 + i)
        inits.append(x.numpy().astype(np.float32))
        n = torch.randn((STEPS,) + shape, generator=gen) * (0.25 * (i + 1))
        keep = torch.rand((STEPS,) + shape, generator=gen) >= 0.02
        noise.append((n * keep).numpy().astype(np.float32))
        save(out, f"init__p{i}", inits[i])
        save(out, f"noise__p{i}", noise[i])

    for name, (ctor, base_lr, wd) in TORCH_CASES.items():
        _torch_case(out, name, ctor, base_lr, wd, inits, noise)

    for name, rho, eps, wd, aliased in (("paddle_adadelta", 0.95, 1e-6, 1e-4, False),
                                        ("paddle_adadelta_wd", 0.9, 1e-6, 1e-2, False),
                                        ("paddle_adadelta_aliased", 0.95, 1e-6, 1e-4, True)):
        save(out, f"{name}__lrs", _lrs(1.0))  # recorded for the test's schedule; Paddle <= 2.4 ignores it
        traj, state = _paddle_adadelta(inits, noise, rho, eps, wd, aliased)
        _save_np_case(out, name, traj, state)
    for name, mu, nesterov, wd in (("paddle_momentum", 0.9, False, 1e-2),
                                   ("paddle_momentum_nesterov", 0.9, True, 1e-2),
                                   ("paddle_sgd", 0.0, False, 1e-2)):
        save(out, f"{name}__lrs", _lrs(0.05))
        traj, state = _paddle_momentum(inits, noise, _lrs(0.05), mu, nesterov, wd)
        _save_np_case(out, name, traj, state)

    _clip_cases(out)
    _sched_cases(out)
