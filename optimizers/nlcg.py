"""Preconditioned stochastic nonlinear conjugate gradients: NLCG-FR and NLCG-PR.

    d_t = -P_t g_t + beta_t d_{t-1}    (P_t diagonal BFGS; beta_t FR or PR, clipped to [0, 1])
    w_{t+1} = w_t + u_t,  u_t = (1 - r_t) eta_t alpha_t d_t - r_t u_{t-1}    (alpha_t, r_t: loss line search)

The specification is docs/nlcg.md, sections 2 and 3; comments "s2.k" below point at its steps.
Every dot product is global over all variables (the sum of per-variable dot products), BN parameters
included. Weight decay is not decoupled: it enters through the loss, so through g (``weight_decay`` is
rejected). The step is ``opt.apply(grads, variables, loss=loss)``, where ``loss`` is the global mean loss of
the batch whose global mean gradient is ``grads``. ``opt.diagnostics()`` gives this step's beta, alpha,
backtrack (r), cos_neg_g_d (cos(-g, d)), bfgs_skipped (1 when B was not updated), precond_mean/min/max (of P).

Args:
    learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule`` (eta_t, evaluated at
        ``iterations`` before the step, as Keras does). Default 0.01.
    rule: ``"fr"`` (Fletcher-Reeves) or ``"pr"`` (Polak-Ribiere; the lower clip makes it PR+). Default "fr".
    preconditioner: ``"bfgs"`` (diagonal BFGS, s2.1) or ``"none"`` (P = 1; B is then not stored).
    line_search: ``"step"`` (authors' code: every ``line_search_period`` steps, ratio = ema / ema_ref),
        ``"online"`` (every step, ratio = L_t / ema), ``"paper"`` (the paper's +-2.5% rule, step cadence,
        no backtrack) or ``"none"`` (alpha = 1). Default "step".
    line_search_period: K, steps between checks in "step" and "paper" modes. Default 5.
    line_search_threshold: tau in percent; every row boundary of the table is 1 + 0.01 tau x (1, 2.5, ...,
        15). Default 1.0.
    fixed_beta: None (the conjugate rule's beta, the algorithm) or a number in [0, 1]: beta held at it from
        step 1 on (0 at t = 0 as always), so NLCG's code path runs with a heavy-ball coefficient (0.9: momentum's;
        an ablation, issue 28). ``rule`` then changes nothing but the PR slot. Default None.
    name, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum, ema_overwrite_frequency: as in
        ``keras.optimizers.Optimizer`` (clipping acts on g before s2.1). ``weight_decay``,
        ``gradient_accumulation_steps`` and ``loss_scale_factor`` are not supported (ValueError): the harness
        puts L2 in the loss, accumulates gradients itself and hands NLCG float32 gradients and the unscaled
        float32 loss in every precision (docs/nlcg.md section 9).

State (optimizer variables, so checkpoints and Horovod broadcasts carry it): per model variable B (ones;
"bfgs" only), g_prev, z_prev ("pr" only), d, u_prev; scalars rho, alpha (starts 1), ema, ema_ref and the
diagnostics. That is 5 parameter-sized buffers for PR and 4 for FR with the BFGS preconditioner.

Decisions (docs/nlcg.md [choice] items and readings of the spec, listed there in section 7):
    * s = u_prev, the real previous weight change (the authors' code uses eta_t alpha d_prev).
    * The backtrack undoes a fraction r of the previous applied step: u_t = (1 - r) eta alpha d - r u_prev;
      the stored d is not changed by it.
    * t = 0 is handled in-graph from ``iterations == 0``: beta = 0, ema = ema_ref = L_0, no line search, no
      BFGS update (B = 1, so P = 1/(1 + 1e-8), which is exactly 1 in float32: z = -g_0).
    * Table rows: the first row is ratio < 1 + 0.01 tau; every other row is closed on the right, so a ratio
      exactly at 1 + 0.01 tau takes the second row (alpha unchanged, r = 0.1).
    * Every decrease is floored at alpha = 1e-4, in every mode; increases are capped at 1.
    * "paper" mode thresholds scale with tau like the table: decrease when ratio > 1 + 0.02 tau, increase
      when ratio < 1 + 0.01 tau (the paper's 2% and 1% at the default tau = 1).
    * ema_ref is set to the current ema at every check (every step in "online" mode, where it is unused).
    * A missing (None) gradient counts as a zero gradient: the direction is global.

Reference: Adya, Palakkode, Tuzel, "Nonlinear Conjugate Gradients for Scaling Synchronous Distributed DNN
Training", arXiv:1812.02886 (2018); authors' code: github.com/apple/ml-ncg.
"""

from __future__ import annotations

import keras
import tensorflow as tf

EPS = 1e-8  # s2: the constant eps
ALPHA_FLOOR = 1e-4  # s3: every decrease of alpha is floored here
EMA_DECAY = 0.7  # s2.3: ema = 0.7 ema + 0.3 L_t

RULES = ("fr", "pr")
PRECONDITIONERS = ("bfgs", "none")
LINE_SEARCHES = ("step", "online", "none", "paper")

# s3 table. Row k >= 1 holds ratios in (1 + 0.01 tau _BOUNDS[k-1], 1 + 0.01 tau _BOUNDS[k]]; row 0 is
# ratio < 1 + 0.01 tau (alpha increases); the last row is everything above 1 + 0.15 tau.
_BOUNDS = (1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0)
_FACTOR = (1.0, 1.0, 0.975, 0.95, 0.9, 0.8, 0.7, 0.5)  # row 0's factor is _INCREASE[mode]
_BACKTRACK = (0.0, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
_INCREASE = {"step": 1.05, "online": 1.02, "paper": 1.025}
_DIAGNOSTICS = (
    "beta",
    "alpha",
    "backtrack",
    "cos_neg_g_d",
    "bfgs_skipped",
    "precond_mean",
    "precond_min",
    "precond_max",
)


def line_search_table(ratio, alpha, mode: str, threshold: float = 1.0):
    """s3: the new step-length factor and backtrack fraction for a loss ratio.

    Args:
        ratio: float32 tensor of any shape (ema / ema_ref, or L_t / ema in "online" mode).
        alpha: float32 tensor broadcastable to ``ratio``, the current factor.
        mode: one of LINE_SEARCHES (a Python string, fixed per trace).
        threshold: tau, in percent.
    Returns:
        (alpha_new, r), float32 tensors of the broadcast shape.
    """
    ratio = tf.convert_to_tensor(ratio, tf.float32)
    alpha = tf.convert_to_tensor(alpha, tf.float32) + tf.zeros_like(ratio)
    no_backtrack = tf.zeros_like(alpha)
    tau = 0.01 * threshold
    if mode == "none":
        return alpha, no_backtrack
    up = tf.minimum(1.0, alpha * _INCREASE[mode])
    if mode == "paper":  # +2.5% below 1 + 0.01 tau, -2.5% above 1 + 0.02 tau, never a backtrack
        down = tf.maximum(alpha * 0.975, ALPHA_FLOOR)
        return tf.where(ratio < 1.0 + tau, up, tf.where(ratio > 1.0 + 2.0 * tau, down, alpha)), no_backtrack
    bounds = tf.constant([1.0 + tau * b for b in _BOUNDS], tf.float32)
    # row = number of bounds passed (the first counts when reached, the others when exceeded)
    passed = tf.concat([ratio[..., None] >= bounds[:1], ratio[..., None] > bounds[1:]], axis=-1)
    row = tf.reduce_sum(tf.cast(passed, tf.int32), axis=-1)
    down = tf.maximum(alpha * tf.gather(tf.constant(_FACTOR), row), ALPHA_FLOOR)
    return tf.where(row == 0, up, down), tf.gather(tf.constant(_BACKTRACK), row)


def conjugate_beta(rule: str, rho_new, rho, g_dot_z_prev):
    """s2.2: FR beta = rho_new / rho, PR beta = (rho_new + g.z_prev) / rho, both clipped to [0, 1]."""
    numerator = rho_new if rule == "fr" else rho_new + g_dot_z_prev
    return tf.clip_by_value(numerator / (rho + EPS), 0.0, 1.0)


def diagonal_bfgs(B, g, g_prev, s, first):
    """s2.1: the diagonal BFGS update of B from y = g - g_prev and s (the previous weight change), skipped at
    t = 0 (``first``) or when y.s or s.B s is below eps; returns (B, P = 1 / (B + eps), skipped). Shared by NLCG
    and every optimizer that borrows its preconditioner (optimizers.preconditioned)."""
    y = [gi - gp for gi, gp in zip(g, g_prev, strict=True)]
    Bs = [b * si for b, si in zip(B, s, strict=True)]
    ys, sBs = _dot(y, s), _dot(s, Bs)
    skipped = first | (ys < EPS) | (sBs < EPS)  # skip rule: B unchanged
    B = [
        tf.where(skipped, b, tf.abs(b - (bs * bs + EPS) / (sBs + EPS) + (yi * yi + EPS) / (ys + EPS)))
        for b, bs, yi in zip(B, Bs, y, strict=True)
    ]
    return B, [1.0 / (b + EPS) for b in B], skipped


def spread(P):
    """(mean, min, max) of the preconditioner's entries over every variable: the precond_* diagnostics."""
    n = sum(p.shape.num_elements() for p in P)
    return (
        tf.add_n([tf.reduce_sum(p) for p in P]) / n,
        tf.reduce_min(tf.stack([tf.reduce_min(p) for p in P])),
        tf.reduce_max(tf.stack([tf.reduce_max(p) for p in P])),
    )


def refuse_unsupported(kwargs: dict, who: str) -> None:
    """ValueError for the Keras arguments a global-step optimizer (NLCG, and those that borrow its preconditioner)
    does not take: weight decay enters through the loss, and the harness accumulates and scales itself."""
    for arg in ("weight_decay", "gradient_accumulation_steps", "loss_scale_factor"):
        if kwargs.get(arg) is not None:
            raise ValueError(
                f"{who} does not support {arg} = {kwargs[arg]!r}; valid: None (weight decay enters "
                "through the loss, docs/nlcg.md s2; the harness accumulates gradients itself)"
            )


def check_float32(var_list, who: str) -> None:
    """ValueError unless every variable is float32 (the state and the dot products are float32)."""
    for v in var_list:
        if v.dtype != "float32":
            raise ValueError(f"{who} needs float32 variables; {v.path} is {v.dtype}")


def global_step_inputs(opt, grads, trainable_variables, who: str, what: str):
    """(gradients, variables) of one step of an optimizer whose step is global over every variable (NLCG, and
    the optimizers that borrow its preconditioner): ``opt`` built on first use, one gradient per variable
    required (``what`` needs them all), a missing (None) gradient a zero one, Keras's clipping applied."""
    if trainable_variables is None:
        if not opt.built:
            raise ValueError("call opt.build(variables) first, or pass the variables to apply")
        trainable_variables = opt._trainable_variables
    else:
        trainable_variables = list(trainable_variables)
        if not opt.built:
            opt.build(trainable_variables)
        opt._check_variables_are_known(trainable_variables)
    if len(grads) != len(opt._trainable_variables) or len(trainable_variables) != len(grads):
        raise ValueError(
            f"{who} needs one gradient for each of its {len(opt._trainable_variables)} variables "
            f"({what} is global); got {len(grads)} gradients"
        )
    grads = [
        tf.zeros(v.shape, v.dtype) if g is None else tf.convert_to_tensor(g, v.dtype)
        for g, v in zip(grads, trainable_variables, strict=True)
    ]
    return opt._clip_gradients(grads), trainable_variables


def _dot(xs, ys):
    """Global dot product over a list of per-variable tensors (no concatenation)."""
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(xs, ys, strict=True)])


def _check_choice(arg: str, value, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"{arg} = {value!r} is not valid; valid: {', '.join(valid)}")


class NLCG(keras.optimizers.Optimizer):
    """Preconditioned stochastic NLCG (Adya et al. 2018); see the module docstring for the algorithm."""

    def __init__(
        self,
        learning_rate=0.01,
        rule="fr",
        preconditioner="bfgs",
        line_search="step",
        line_search_period=5,
        line_search_threshold=1.0,
        fixed_beta=None,
        name="nlcg",
        **kwargs,
    ):
        refuse_unsupported(kwargs, "NLCG")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        _check_choice("rule", rule, RULES)
        _check_choice("preconditioner", preconditioner, PRECONDITIONERS)
        _check_choice("line_search", line_search, LINE_SEARCHES)
        period, tau = line_search_period, line_search_threshold
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"line_search_period = {period!r} is not valid; valid: an integer >= 1")
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not tau > 0:
            raise ValueError(f"line_search_threshold = {tau!r} is not valid; valid: a number > 0 (percent)")
        if fixed_beta is not None and (isinstance(fixed_beta, bool) or not isinstance(fixed_beta, int | float)
                                       or not 0 <= fixed_beta <= 1):
            raise ValueError(f"fixed_beta = {fixed_beta!r} is not valid; valid: None or a number in [0, 1]")
        self.fixed_beta = None if fixed_beta is None else float(fixed_beta)
        self.rule = rule
        self.preconditioner = preconditioner
        self.line_search = line_search
        self.line_search_period = line_search_period
        self.line_search_threshold = float(line_search_threshold)

    def build(self, var_list):
        """Create the state: one optimizer variable per model variable and slot, plus the scalars."""
        if self.built:
            return
        super().build(var_list)
        check_float32(var_list, "NLCG")

        def slot(name, initializer="zeros"):
            return [self.add_variable_from_reference(v, name=name, initializer=initializer) for v in var_list]

        def scalar(name, initializer="zeros"):
            return self.add_variable(shape=(), initializer=initializer, name=name)

        self._B = slot("B", "ones") if self.preconditioner == "bfgs" else []
        self._g_prev = slot("g_prev")
        self._z_prev = slot("z_prev") if self.rule == "pr" else []
        self._d = slot("d")
        self._u_prev = slot("u_prev")
        self._rho = scalar("rho")
        self._alpha = scalar("alpha", "ones")
        self._ema = scalar("ema")
        self._ema_ref = scalar("ema_ref")
        self._diag = {k: scalar(k) for k in _DIAGNOSTICS if k != "alpha"}

    def apply(self, grads, trainable_variables=None, loss=None):
        """One NLCG step. ``loss``: the global mean loss of the batch (a scalar); required."""
        if loss is None:
            raise ValueError("NLCG needs the batch's loss: opt.apply(grads, variables, loss=loss)")
        grads, trainable_variables = global_step_inputs(self, grads, trainable_variables, "NLCG", "the direction")
        self._nlcg_step(grads, trainable_variables, tf.reshape(tf.cast(loss, tf.float32), []))
        for v in trainable_variables:
            if v.constraint is not None:
                v.assign(v.constraint(v))
        if self.use_ema:  # Keras's weight EMA, as BaseOptimizer._backend_apply_gradients does it
            self._update_model_variables_moving_average(self._trainable_variables)
            if self.ema_overwrite_frequency:
                overwrite = (self.iterations + 1) % self.ema_overwrite_frequency == 0
                keras.ops.cond(
                    overwrite,
                    lambda: self._overwrite_model_variables_with_average_value(self._trainable_variables),
                    lambda: None,
                )
        self._iterations.assign_add(1)  # exactly once per step

    def _nlcg_step(self, g, variables, loss):
        """docs/nlcg.md s2 steps 1-5 (with s3) on gradients ``g`` (list, aligned with ``variables``)."""
        idx = [self._get_variable_index(v) for v in variables]
        g_prev = [self._g_prev[i].value for i in idx]
        d_prev = [self._d[i].value for i in idx]
        u_prev = [self._u_prev[i].value for i in idx]
        t = self._iterations.value
        first = tf.equal(t, 0)  # s2 "step t = 0"
        eta = tf.cast(self.learning_rate, tf.float32)

        # s2.1 preconditioner: diagonal BFGS with y = g_t - g_prev, s = u_prev [choice]
        if self.preconditioner == "bfgs":
            B, P, skipped = diagonal_bfgs([self._B[i].value for i in idx], g, g_prev, u_prev, first)
            Pg = [p * gi for p, gi in zip(P, g, strict=True)]
            precond = spread(P)
        else:  # P = 1
            skipped = tf.constant(True)
            Pg = g
            precond = (1.0, 1.0, 1.0)

        # s2.2 direction: z = -P g, rho_new = g.P g, beta (FR or PR, clipped to [0, 1]; 0 at t = 0)
        z = [-x for x in Pg]
        rho_new = _dot(g, Pg)
        g_dot_z_prev = _dot(g, [self._z_prev[i].value for i in idx]) if self.rule == "pr" else None
        rule_beta = conjugate_beta(self.rule, rho_new, self._rho.value, g_dot_z_prev) if self.fixed_beta is None \
            else tf.constant(self.fixed_beta)
        beta = tf.where(first, 0.0, rule_beta)
        d = [zi + beta * di for zi, di in zip(z, d_prev, strict=True)]

        # s2.3 loss average (ema = L_0 at t = 0)
        ema = tf.where(first, loss, EMA_DECAY * self._ema.value + (1.0 - EMA_DECAY) * loss)

        # s2.4 / s3 line search on alpha: at checks only, never at t = 0
        alpha = self._alpha.value
        if self.line_search == "none":
            check, ratio = tf.constant(False), tf.constant(1.0)
        elif self.line_search == "online":  # every step, L_t against the ema that includes it
            check, ratio = ~first, loss / ema
        else:  # "step", "paper": every K steps, ema against the ema of the previous check
            check, ratio = ~first & tf.equal(t % self.line_search_period, 0), ema / self._ema_ref.value
        alpha_new, r = line_search_table(ratio, alpha, self.line_search, self.line_search_threshold)
        alpha_new = tf.where(check, alpha_new, alpha)
        r = tf.where(check, r, 0.0)
        ema_ref = tf.where(first, loss, tf.where(check, ema, self._ema_ref.value))

        # s2.5 step: u_t = (1 - r) eta alpha d - r u_prev [choice]; w += u_t
        scale = (1.0 - r) * eta * alpha_new
        u = [scale * di - r * up for di, up in zip(d, u_prev, strict=True)]

        gg, dd = _dot(g, g), _dot(d, d)
        cos_neg_g_d = -_dot(g, d) / (tf.sqrt(gg) * tf.sqrt(dd) + EPS)

        # Every new value above was computed from the old state (the slots are read lazily, so no write may
        # come earlier); now write it back.
        for k, i in enumerate(idx):
            if self.preconditioner == "bfgs":
                self.assign(self._B[i], B[k])
            if self.rule == "pr":
                self.assign(self._z_prev[i], z[k])
            self.assign(self._g_prev[i], g[k])
            self.assign(self._d[i], d[k])
            self.assign(self._u_prev[i], u[k])
            self.assign_add(variables[k], u[k])
        self.assign(self._rho, rho_new)
        self.assign(self._alpha, alpha_new)
        self.assign(self._ema, ema)
        self.assign(self._ema_ref, ema_ref)
        diag = (beta, r, cos_neg_g_d, tf.cast(skipped, tf.float32), *precond)
        for var, value in zip(self._diag.values(), diag, strict=True):
            self.assign(var, value)

    def diagnostics(self) -> dict:
        """The last step's scalars for the history table (float32 tensors), keyed as _DIAGNOSTICS."""
        if not self.built:
            raise ValueError("NLCG.diagnostics() needs a built optimizer (call build or apply first)")
        values = {"alpha": self._alpha, **self._diag}
        return {k: tf.identity(values[k].value) for k in _DIAGNOSTICS}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rule": self.rule,
                "preconditioner": self.preconditioner,
                "line_search": self.line_search,
                "line_search_period": self.line_search_period,
                "line_search_threshold": self.line_search_threshold,
                "fixed_beta": self.fixed_beta,
            }
        )
        return config
