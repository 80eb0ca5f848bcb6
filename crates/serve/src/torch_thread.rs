//! The one OS thread that makes every libtorch call of a server: loading, calibrating and every
//! forward pass of every model.
//!
//! Why one thread: libtorch runs its kernels on OpenMP, and GNU OpenMP keeps a team of worker
//! threads per calling thread. Once two threads have called into libtorch on a machine with few
//! cores, OpenMP has more threads than cores and stops letting its workers spin between parallel
//! regions; every region then waits for sleeping workers to wake. Measured on 2 cores with
//! EfficientNet-Lite0: a lone image's forward pass took 12.5 ms when the model was loaded on one
//! thread and run on another, 9 ms when one thread did both. Passes of different models are
//! serialised here, which on a CPU costs nothing: two passes at once would only share the cores.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::Error;

type Task = Box<dyn FnOnce() + Send>;

/// A handle on the thread; clones share it. The thread ends when every handle is dropped.
#[derive(Clone)]
pub struct TorchThread {
    tx: mpsc::Sender<Task>,
}

/// What a task answered: `Err` when it panicked (the thread goes on) or the thread is gone.
pub type Answer<R> = Result<R, TaskFailed>;

/// Why a task gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFailed {
    /// The task panicked; the thread caught it and goes on.
    Panicked,
    /// The thread has stopped.
    Gone,
}

impl TorchThread {
    /// Starts the thread.
    pub fn spawn() -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("petal-torch".into())
            .spawn(move || {
                for task in rx {
                    task();
                }
            })
            .map_err(|e| Error::Runtime(format!("could not start the libtorch thread: {e}")))?;
        Ok(TorchThread { tx })
    }

    /// Runs `f` on the thread; await the receiver for its answer.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> oneshot::Receiver<Result<R, TaskFailed>> {
        let (reply, answer) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = reply.send(catch_unwind(AssertUnwindSafe(f)).map_err(|_| TaskFailed::Panicked));
        });
        // If the thread is gone, the task (and `reply`) is dropped and the receiver reports it.
        let _ = self.tx.send(task);
        answer
    }

    /// Runs `f` on the thread and waits for it (not from inside an async task).
    pub fn run_blocking<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Answer<R> {
        self.run(f).blocking_recv().unwrap_or(Err(TaskFailed::Gone))
    }

    /// Runs `f` on the thread and awaits it.
    pub async fn run_async<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Answer<R> {
        self.run(f).await.unwrap_or(Err(TaskFailed::Gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_in_order_on_one_thread_and_a_panic_is_answered() {
        let t = TorchThread::spawn().expect("spawn");
        let a = t.run_blocking(|| std::thread::current().id()).expect("first");
        assert_eq!(t.run_blocking(|| panic!("injected")), Err::<(), _>(TaskFailed::Panicked));
        let b = t.run_blocking(|| std::thread::current().id()).expect("after a panic");
        assert_eq!(a, b, "the same thread, still alive");
        assert_ne!(a, std::thread::current().id());
    }
}
