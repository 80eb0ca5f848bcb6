//! Terminal drawing of the libraries' progress events: one indicatif bar per counted task, lines
//! for messages and warnings (printed above a live bar, never through it).

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use petal_common::{Event, Progress};

/// Draws [`Event`]s on stderr.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn line(&self, bar: Option<&ProgressBar>, text: &str) {
        match bar {
            Some(b) => b.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {prefix}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn event(&self, event: Event<'_>) {
        let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Start { task, total } => {
                if let Some(old) = guard.take() {
                    old.finish_and_clear();
                }
                let b = ProgressBar::new(total).with_style(style()).with_message(task.to_string());
                *guard = Some(b);
            }
            Event::Advance { done, note } => {
                if let Some(b) = guard.as_ref() {
                    b.set_position(done);
                    if let Some(n) = note {
                        b.set_prefix(n.to_string());
                    }
                }
            }
            Event::Finish { summary } => {
                if let Some(b) = guard.take() {
                    b.finish_and_clear();
                }
                if let Some(s) = summary {
                    eprintln!("{s}");
                }
            }
            Event::Message(m) => self.line(guard.as_ref(), m),
            Event::Warning(w) => self.line(guard.as_ref(), &format!("warning: {w}")),
        }
    }
}
