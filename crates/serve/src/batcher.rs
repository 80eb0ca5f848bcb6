//! Dynamic batching: one bounded queue and one batcher task per model.
//!
//! A request is admitted for its number of images against a semaphore of `--queue` permits (full:
//! 503 with Retry-After, so memory stays bounded), decoded off the runtime, and sent as one [`Job`].
//! The batcher takes the first job, then keeps taking jobs until the batch would exceed
//! `--max-batch` images or `--max-wait-ms` has passed, and runs the forward pass on the server's one
//! libtorch thread ([`crate::torch_thread`]). While it runs, new jobs queue up and form the next batch. A panic in the forward pass
//! answers the batch's requests with an error, and the batcher goes on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infer::ClassProb;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{Backend, BackendError};
use crate::torch_thread::{TaskFailed, TorchThread};

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most images per forward pass.
    pub max_batch: usize,
    /// Longest wait for more jobs after the first.
    pub max_wait: Duration,
    /// Images admitted at once (queued or in a forward pass).
    pub queue: usize,
    /// Calibrate the backend at start ([`Backend::calibrate`]) so that an image's answer never
    /// depends on how many others shared its pass. The classifier head already runs each image
    /// alone; the backbone's convolutions may not give an image the same bits at every batch size
    /// (EfficientNet-Lite0 on 2 threads: a pass of 1 image differs from one of 2), and the
    /// calibration finds the pass sizes that do: other passes then run padded with blank images.
    pub pad: bool,
}

/// One request's images on their way through the batcher.
pub struct Job {
    /// Prepared images laid end to end ([`Backend::prepare`]: RGB8, normalised just before the pass).
    pub input: Vec<u8>,
    /// Top-k wanted per image (its length is the number of images).
    pub ks: Vec<usize>,
    /// The request's admission; released when the job is answered.
    pub admitted: OwnedSemaphorePermit,
    /// When the job was queued.
    pub enqueued: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<JobOutput, JobError>>,
}

/// The answer to a [`Job`].
#[derive(Debug)]
pub struct JobOutput {
    /// Top-k per image.
    pub top: Vec<Vec<ClassProb>>,
    /// Time from queueing to the start of the forward pass.
    pub queued: Duration,
    /// Time of the forward pass (of the whole batch).
    pub forward: Duration,
    /// Images in the batch the job ran in.
    pub batch_images: usize,
}

/// Why a job failed.
#[derive(Debug)]
pub enum JobError {
    /// The forward pass panicked (the service goes on).
    Panicked,
    /// The forward pass returned an error.
    Failed(String),
}

/// The sending side of a model's queue.
pub struct ModelQueue {
    tx: mpsc::Sender<Job>,
    admission: Arc<Semaphore>,
    capacity: usize,
    waiting: Arc<AtomicUsize>,
}

impl ModelQueue {
    /// Admits `images` images, or answers 503 when the queue is full.
    pub fn admit(&self, images: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = u32::try_from(images).unwrap_or(u32::MAX);
        self.admission
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| ApiError::overloaded(format!("the model's queue is full ({} images admitted); retry shortly", self.admitted()), 1))
    }

    /// Images admitted and not yet answered (being decoded, queued or in a forward pass): the
    /// quantity `--queue` bounds.
    pub fn admitted(&self) -> usize {
        self.capacity - self.admission.available_permits()
    }

    /// Images queued and waiting for a forward pass.
    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Queues an admitted job.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let n = job.ks.len();
        self.waiting.fetch_add(n, Ordering::Relaxed);
        // Every job holds at least one of `capacity` permits and the channel holds `capacity` jobs,
        // so it cannot be full; it is closed only while the server shuts down.
        self.tx.try_send(job).map_err(|_| {
            self.waiting.fetch_sub(n, Ordering::Relaxed);
            ApiError::overloaded("the service is shutting down", 1)
        })
    }
}

/// Starts the batcher of `backend` on the current runtime; its forward passes run on `torch`. With
/// `cfg.pad` it first calibrates the backend ([`Backend::calibrate`]) there and returns its answer:
/// `run_as[n]` for passes of `n` images.
pub async fn start(
    backend: Arc<dyn Backend>,
    cfg: BatchConfig,
    metrics: Arc<Metrics>,
    torch: TorchThread,
) -> Result<(ModelQueue, Vec<usize>), String> {
    let b = backend.clone();
    let calibrated = torch
        .run_async(move || {
            let r = if cfg.pad { b.calibrate(cfg.max_batch) } else { Ok((0..=cfg.max_batch).collect()) };
            crate::memory::release_free_heap();
            r
        })
        .await;
    let run_as = calibrated.map_err(|e| format!("{e:?}"))?.map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(cfg.queue.max(1));
    let waiting = Arc::new(AtomicUsize::new(0));
    tokio::spawn(run(rx, backend, torch, cfg, metrics, waiting.clone()));
    Ok((ModelQueue { tx, admission: Arc::new(Semaphore::new(cfg.queue)), capacity: cfg.queue, waiting }, run_as))
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    backend: Arc<dyn Backend>,
    torch: TorchThread,
    cfg: BatchConfig,
    metrics: Arc<Metrics>,
    waiting: Arc<AtomicUsize>,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut images = first.ks.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + cfg.max_wait;
        while images < cfg.max_batch {
            let next = match rx.try_recv() {
                Ok(j) => Some(j),
                // With no wait, a batch is what queued up while the previous pass ran.
                Err(mpsc::error::TryRecvError::Empty) if cfg.max_wait.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten(),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
            let Some(job) = next else { break };
            if images + job.ks.len() > cfg.max_batch {
                carried = Some(job);
                break;
            }
            images += job.ks.len();
            jobs.push(job);
        }
        waiting.fetch_sub(images, Ordering::Relaxed);
        execute(jobs, &backend, &torch, cfg, &metrics).await;
    }
}

/// The forward passes of one batch: a job bigger than a batch (more images than `max_batch`) runs
/// in several passes.
fn forward(b: &dyn Backend, input: &[u8], ks: &[usize], max_batch: usize) -> Result<Vec<Vec<ClassProb>>, BackendError> {
    let per_image = input.len() / ks.len().max(1);
    let mut out = Vec::with_capacity(ks.len());
    for (chunk, kc) in input.chunks(per_image * max_batch).zip(ks.chunks(max_batch)) {
        out.extend(b.predict(chunk, kc)?);
    }
    Ok(out)
}

/// Runs one batch on the libtorch thread and answers its jobs.
async fn execute(jobs: Vec<Job>, backend: &Arc<dyn Backend>, torch: &TorchThread, cfg: BatchConfig, metrics: &Metrics) {
    let start = Instant::now();
    let mut input = Vec::with_capacity(jobs.iter().map(|j| j.input.len()).sum());
    let mut ks = Vec::new();
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        input.extend_from_slice(&job.input);
        ks.extend_from_slice(&job.ks);
        replies.push((job.ks.len(), job.enqueued, job.reply, job.admitted));
    }
    let total = ks.len();
    let b = backend.clone();
    let result = torch.run_async(move || forward(&*b, &input, &ks, cfg.max_batch)).await;
    let forward = start.elapsed();
    metrics.batch(&backend.info().name, total, forward);
    let mut tops = match result {
        Ok(Ok(tops)) if tops.len() == total => Ok(tops.into_iter()),
        Ok(Ok(tops)) => Err(JobError::Failed(format!("the network answered {} images of {total}", tops.len()))),
        Ok(Err(e)) => Err(JobError::Failed(e.to_string())),
        Err(TaskFailed::Gone) => Err(JobError::Failed("the libtorch thread has stopped".into())),
        Err(TaskFailed::Panicked) => {
            metrics.panic();
            Err(JobError::Panicked)
        }
    };
    for (n, enqueued, reply, admitted) in replies {
        let answer = match &mut tops {
            Ok(it) => Ok(JobOutput { top: it.by_ref().take(n).collect(), queued: start.duration_since(enqueued), forward, batch_images: total }),
            Err(JobError::Panicked) => Err(JobError::Panicked),
            Err(JobError::Failed(e)) => Err(JobError::Failed(e.clone())),
        };
        drop(admitted);
        let _ = reply.send(answer);
    }
}
