//! Epochs on cached inputs: the head on pooled features (frozen mode), or the trainable blocks and
//! the head on activation maps (partial mode). Both read their batches from a cache, never from images.

use model::Classifier;
use tch::{Device, Kind, Tensor};

use crate::activations::ActivationCache;
use crate::config::TrainConfig;
use crate::{loss_fn, optim, CachedInputs, EpochMetrics, Error, EvalFigures, TrainFigures};

/// What a cached epoch trains on.
pub(crate) enum Cached {
    /// Pooled features `[N, F]` and labels `[N]` (frozen mode): only the head runs.
    Features(Tensor, Tensor),
    /// Activation maps after backbone unit `split` (partial mode): the units from `split` on and
    /// the head run.
    Activations(ActivationCache, usize),
    /// Several activation caches read as one, in order (a final fit's training split and
    /// selection part).
    Joined(Vec<Cached>),
}

impl Cached {
    fn len(&self) -> usize {
        match self {
            Cached::Features(x, _) => x.size()[0] as usize,
            Cached::Activations(c, _) => c.len(),
            Cached::Joined(parts) => parts.iter().map(Cached::len).sum(),
        }
    }

    /// `parts` read as one: features are concatenated, activation caches joined.
    pub(crate) fn join(mut parts: Vec<Cached>) -> Result<Cached, Error> {
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        if parts.iter().all(|p| matches!(p, Cached::Features(..))) {
            let (xs, ys): (Vec<Tensor>, Vec<Tensor>) = parts
                .into_iter()
                .map(|p| match p {
                    Cached::Features(x, y) => (x, y),
                    _ => unreachable!("all parts are features"),
                })
                .unzip();
            return Ok(Cached::Features(Tensor::cat(&xs, 0), Tensor::cat(&ys, 0)));
        }
        Ok(Cached::Joined(parts))
    }

    /// Inputs and labels of the images at `idx`, on `device`.
    fn batch(&self, idx: &[usize], device: Device) -> Result<(Tensor, Tensor), Error> {
        let (x, y) = match self {
            Cached::Features(x, y) => {
                let t = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
                (x.index_select(0, &t), y.index_select(0, &t))
            }
            Cached::Activations(c, _) => c.batch(idx)?,
            Cached::Joined(parts) => {
                // Each image from the part it lies in, in the order asked.
                let (mut xs, mut ys, mut start) = (Vec::new(), Vec::new(), 0);
                let mut place = vec![0i64; idx.len()];
                for p in parts {
                    let end = start + p.len();
                    let mine: Vec<(usize, usize)> =
                        idx.iter().enumerate().filter(|&(_, &i)| (start..end).contains(&i)).map(|(k, &i)| (k, i - start)).collect();
                    if !mine.is_empty() {
                        let (x, y) = p.batch(&mine.iter().map(|m| m.1).collect::<Vec<_>>(), Device::Cpu)?;
                        let offset: usize = xs.iter().map(|t: &Tensor| t.size()[0] as usize).sum();
                        for (j, &(k, _)) in mine.iter().enumerate() {
                            place[k] = (offset + j) as i64;
                        }
                        xs.push(x);
                        ys.push(y);
                    }
                    start = end;
                }
                let order = Tensor::from_slice(&place);
                (Tensor::cat(&xs, 0).index_select(0, &order), Tensor::cat(&ys, 0).index_select(0, &order))
            }
        };
        Ok((x.to_device(device), y.to_device(device)))
    }

    /// Logits of a batch. `kind` is the dtype of the head's matrix products on features (f32, or
    /// bf16 for `train_dtype = "bf16"`); partial mode's blocks run in f32 (the config refuses bf16 there).
    fn forward(&self, net: &Classifier, x: &Tensor, train: bool, kind: Kind) -> Result<Tensor, Error> {
        match self {
            Cached::Features(..) => Ok(net.head_forward_as(x, train, kind)),
            Cached::Activations(_, split) => Ok(net.forward_from(x, *split, train)?),
            // The parts are all of one kind (activation caches: features are concatenated instead).
            Cached::Joined(parts) => match parts.first() {
                Some(p) => p.forward(net, x, train, kind),
                None => Ok(net.head_forward_as(x, train, kind)),
            },
        }
    }
}

/// One training epoch on cached inputs.
pub(crate) fn epoch(
    net: &Classifier,
    opt: &mut optim::Optimizer,
    data: &Cached,
    cfg: &TrainConfig,
    (epoch, lr): (usize, f64),
    device: Device,
) -> Result<TrainFigures, Error> {
    let n = data.len();
    let order = preprocess::epoch_order(n, cfg.recipe.seed, epoch as u64, true);
    let (mut loss_sum, mut correct) = (0.0, 0i64);
    for chunk in order.chunks(cfg.recipe.batch_size) {
        let (xb, yb) = data.batch(chunk, device)?;
        let logits = data.forward(net, &xb, true, cfg.recipe.train_dtype.kind())?;
        let loss = loss_fn(&logits, &yb, cfg.recipe.label_smoothing);
        opt.zero_grad();
        loss.backward();
        opt.step(lr);
        loss_sum += loss.double_value(&[]) * chunk.len() as f64;
        correct += logits.argmax(1, false).eq_tensor(&yb).sum(Kind::Int64).int64_value(&[]);
    }
    Ok(TrainFigures { loss: loss_sum / n.max(1) as f64, acc: correct as f64 / n.max(1) as f64, images: n })
}

/// Loss and accuracy on cached inputs, in eval mode.
pub(crate) fn eval(net: &Classifier, data: &Cached, bs: usize, device: Device) -> Result<EvalFigures, Error> {
    let n = data.len();
    let (mut loss_sum, mut correct) = (0.0, 0i64);
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(bs.max(1)) {
        let (xb, yb) = data.batch(chunk, device)?;
        let logits = tch::no_grad(|| data.forward(net, &xb, false, Kind::Float))?;
        loss_sum += loss_fn(&logits, &yb, 0.0).double_value(&[]) * chunk.len() as f64;
        correct += logits.argmax(1, false).eq_tensor(&yb).sum(Kind::Int64).int64_value(&[]);
    }
    Ok(EvalFigures { loss: loss_sum / n.max(1) as f64, acc: correct as f64 / n.max(1) as f64 })
}

/// One epoch of a run on cached inputs, as [`crate::train`] and a sweep trial both run it: training
/// on view `epoch % views`, then validation when there is a validation split. The caller seeds the
/// epoch ([`crate::frozen::seed_epoch`]).
pub(crate) fn run_epoch(
    net: &Classifier,
    opt: &mut optim::Optimizer,
    CachedInputs { views, valid }: &CachedInputs,
    cfg: &TrainConfig,
    epoch: usize,
    device: Device,
) -> Result<EpochMetrics, Error> {
    let t0 = std::time::Instant::now();
    let lr = cfg.recipe.lr_at(epoch);
    let train = self::epoch(net, opt, &views[epoch % views.len()], cfg, (epoch, lr), device)?;
    let train_s = t0.elapsed().as_secs_f64();
    let valid = valid.as_ref().map(|v| eval(net, v, crate::cached_eval_batch(cfg), device)).transpose()?;
    Ok(EpochMetrics::measured(epoch, train, valid, lr, t0, train_s))
}
