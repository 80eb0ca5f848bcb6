//! What libraries report instead of printing. A binary turns [`Event`]s into progress bars and
//! lines on the terminal; a program that embeds the crates may log them, or pass [`Silent`].

/// One progress event. Tasks do not nest: a `Start` is followed by `Advance`s and one `Finish`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// A counted task begins (e.g. `"valid features"` over 1 000 images).
    Start {
        /// What is being done, in a few words.
        task: &'a str,
        /// Units of work in all.
        total: u64,
    },
    /// The current task has done `done` units; `note` is a short live figure (e.g. `"loss 0.31"`).
    Advance {
        /// Units done so far.
        done: u64,
        /// A short live figure, if any.
        note: Option<&'a str>,
    },
    /// The current task ended; `summary` says how it went (e.g. `"1000 images in 9.1 s"`).
    Finish {
        /// One line about the finished task, if there is one worth showing.
        summary: Option<&'a str>,
    },
    /// A line for the user: an epoch's figures, a stage starting or being skipped.
    Message(&'a str),
    /// Something went wrong but the work goes on (e.g. an unusable cache file that is recomputed).
    Warning(&'a str),
}

/// Receives [`Event`]s. Implemented by every `Fn(Event) + Sync` closure.
pub trait Progress: Sync {
    /// Handles one event.
    fn event(&self, event: Event<'_>);
}

impl<F: Fn(Event<'_>) + Sync> Progress for F {
    fn event(&self, event: Event<'_>) {
        self(event)
    }
}

/// Ignores every event (messages and warnings still go to `tracing`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Message(m) => tracing::info!("{m}"),
            Event::Warning(w) => tracing::warn!("{w}"),
            _ => {}
        }
    }
}
