//! The guest threads: a Tokio runtime of their own where jobs that run
//! long move at their guest's first epoch tick, so guest code never holds
//! a thread the control plane needs.

use anyhow::Context as _;

/// A Tokio runtime of its own for jobs that run long. Guest code is CPU work
/// the host does not control: on these threads it can never delay the
/// listener, sweeper, pump or dispatcher, which run on the caller's runtime
/// (the OS shares the cores between both; guests yield on every epoch tick
/// within theirs). A job starts on the caller's runtime and moves here at
/// its guest's first epoch tick ([`run_job_task`]).
pub(super) struct GuestThreads(pub(super) Option<tokio::runtime::Runtime>);

thread_local! {
    /// True on the guest threads.
    static ON_GUEST_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set when a guest yields at an epoch tick on this thread: it has run
    /// guest code for up to a tick. Read and cleared by [`run_job_task`].
    static TICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller runs on the guest threads (host calls made there run
/// their Redis I/O on the control runtime instead).
pub(crate) fn on_guest_thread() -> bool {
    ON_GUEST_THREAD.with(std::cell::Cell::get)
}

/// Runs a job's future where it was called (the control runtime) until its
/// guest first yields at an epoch tick, then moves it to `guests` for the
/// rest of its run.
///
/// Most jobs end, host calls included, well within a tick of guest code
/// (5 ms): they run with no handoff between threads, which measured 7 µs
/// of host CPU less per job in the 1-host burst and 13 % more jobs a
/// second (`docs/benchmarks-history.md`). A
/// CPU-bound guest holds a control thread for at most one tick, once; from
/// then on it runs on the guest threads, as every job did before.
///
/// The job keeps the caller's span (a job's span) when it moves.
///
/// # Errors
/// The job panicking, here or on the guest threads (its message): the
/// panic ends the job, not the caller's task.
pub async fn run_job_task<F>(job: F, guests: tokio::runtime::Handle) -> Result<F::Output, String>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use std::task::Poll;
    let mut job = Box::pin(job);
    let finished_here = std::future::poll_fn(|cx| {
        TICKED.with(|t| t.set(false));
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Ready(out)) => Poll::Ready(Some(Ok(out))),
            Err(panic) => Poll::Ready(Some(Err(panic_message(panic.as_ref())))),
            // Only the guest's own tick sets the flag during this poll.
            Ok(Poll::Pending) if TICKED.with(std::cell::Cell::take) => Poll::Ready(None),
            Ok(Poll::Pending) => Poll::Pending,
        }
    })
    .await;
    match finished_here {
        Some(out) => out,
        None => {
            use tracing::Instrument as _;
            let span = tracing::Span::current();
            guests
                .spawn(job.instrument(span))
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// The message of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic");
    format!("panicked: {text}")
}

impl GuestThreads {
    pub(super) fn new() -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("symphony-guest")
            .on_thread_start(|| ON_GUEST_THREAD.with(|g| g.set(true)))
            .enable_all()
            .build()
            .context("cannot start the guest threads")?;
        Ok(Self(Some(rt)))
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async context may not do.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Marks that a guest yielded at an epoch tick on this thread (the epoch
/// callback calls it); [`run_job_task`] then moves the job here.
pub(super) fn note_tick() {
    TICKED.with(|t| t.set(true));
}

#[cfg(test)]
mod tests {
    use super::{GuestThreads, TICKED, on_guest_thread, run_job_task};

    #[test]
    fn a_job_runs_where_it_starts_until_its_first_tick_then_on_the_guest_threads() {
        let guests = GuestThreads::new().unwrap();
        let handle = guests.0.as_ref().unwrap().handle().clone();
        let control = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A job that never ticks ends where it started.
        let short = control.block_on(run_job_task(async { on_guest_thread() }, handle.clone()));
        assert!(
            !short.unwrap(),
            "a short job should not leave the control runtime"
        );
        // A job whose guest ticks (as the epoch callback marks it) goes on,
        // from its next poll, on the guest threads, in the caller's span.
        // (Spans are recorded only under a subscriber, global for the
        // guest threads' sake.)
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        let ticking = async {
            let mut where_ran = Vec::new();
            for _ in 0..3 {
                let span = tracing::Span::current().metadata().map(|m| m.name());
                where_ran.push((on_guest_thread(), span));
                TICKED.with(|t| t.set(true));
                tokio::task::yield_now().await;
            }
            where_ran
        };
        let where_ran = control
            .block_on(tracing::Instrument::instrument(
                run_job_task(ticking, handle.clone()),
                tracing::info_span!("job"),
            ))
            .unwrap();
        assert_eq!(
            where_ran,
            [
                (false, Some("job")),
                (true, Some("job")),
                (true, Some("job"))
            ]
        );
        // A job that panics ends with the panic's message; the caller goes on.
        let panicked = control.block_on(run_job_task(
            async {
                let n: u32 = std::hint::black_box(0);
                if n == 0 {
                    panic!("boom");
                }
                n
            },
            handle,
        ));
        assert_eq!(panicked.unwrap_err(), "panicked: boom");
    }
}
