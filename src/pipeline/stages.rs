//! Stages on threads joined by bounded channels, with one shared stop signal.
//!
//! Each stage is a closure run on its own thread. Stages hand work on through bounded
//! crossbeam channels, so a fast producer waits for a slow consumer and memory stays bounded.
//! The first stage to fail stops all the others (they see the stop signal or a closed
//! channel) and its error is the one reported; Ctrl-C raises the same signal. Each stage is
//! a named function with typed input and output; its [`StageHandle`] returns what it
//! produced when joined.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};

use super::PipelineError;

/// How often a blocked stage looks at the stop signal.
const POLL: Duration = Duration::from_millis(50);

/// A signal shared by all stages of a run: set when a stage fails or the user interrupts.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    stopped: Arc<AtomicBool>,
    interrupted: Arc<AtomicBool>,
    /// Whether the first interrupt only asks the source to end (a live watch).
    graceful: Arc<AtomicBool>,
    /// Set by that first interrupt.
    ending: Arc<AtomicBool>,
}

impl StopSignal {
    /// A fresh signal, not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal raised by Ctrl-C (SIGINT/SIGTERM) as well as by failing stages.
    ///
    /// The process-wide handler is installed on first use; each call returns a fresh signal
    /// that the handler raises, so consecutive runs in one process do not inherit a stop.
    pub fn with_interrupt() -> Self {
        static CURRENT: OnceLock<Mutex<StopSignal>> = OnceLock::new();
        let signal = StopSignal::new();
        let current = CURRENT.get_or_init(|| {
            // If another handler is already installed (e.g. by an embedding program), Ctrl-C
            // keeps that program's behaviour; stages still stop on errors.
            let _ = ctrlc::set_handler(|| {
                if let Some(current) = CURRENT.get() {
                    current.lock().expect("stop signal lock").interrupt();
                }
            });
            Mutex::new(StopSignal::new())
        });
        *current.lock().expect("stop signal lock") = signal.clone();
        signal
    }

    /// Asks every stage to stop.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Records a user interrupt and stops every stage; after
    /// [`StopSignal::end_gracefully`], the first interrupt only asks the source to end.
    pub fn interrupt(&self) {
        if self.graceful.load(Ordering::SeqCst) && !self.ending.swap(true, Ordering::SeqCst) {
            return;
        }
        self.interrupted.store(true, Ordering::SeqCst);
        self.stop();
    }

    /// Makes the first interrupt end the input instead of stopping the stages, so that the
    /// work under way finishes and is written (a second interrupt stops at once).
    pub fn end_gracefully(&self) {
        self.graceful.store(true, Ordering::SeqCst);
    }

    /// Asks the source to end as if its input had ended.
    pub fn end_input(&self) {
        self.ending.store(true, Ordering::SeqCst);
    }

    /// Whether the source was asked to end (see [`StopSignal::end_gracefully`]).
    pub fn is_ending(&self) -> bool {
        self.ending.load(Ordering::SeqCst)
    }

    /// Whether stages should stop.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Whether the stop came from the user.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Fails with [`PipelineError::Interrupted`] or [`PipelineError::Stopped`] once raised.
    pub fn check(&self) -> Result<(), PipelineError> {
        if self.is_interrupted() {
            Err(PipelineError::Interrupted)
        } else if self.is_stopped() {
            Err(PipelineError::Stopped)
        } else {
            Ok(())
        }
    }

    /// Waits `duration`, failing as soon as the signal is raised.
    pub fn sleep(&self, duration: Duration) -> Result<(), PipelineError> {
        let until = std::time::Instant::now() + duration;
        loop {
            self.check()?;
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Sends `item`, waiting while the channel is full, until the signal is raised or the
    /// receiving stage has gone.
    pub fn send<T>(&self, sender: &Sender<T>, mut item: T) -> Result<(), PipelineError> {
        loop {
            self.check()?;
            match sender.send_timeout(item, POLL) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(returned)) => item = returned,
                Err(SendTimeoutError::Disconnected(_)) => return Err(PipelineError::Stopped),
            }
        }
    }

    /// Receives the next item, or `None` once the sending stage has finished; fails once
    /// the signal is raised.
    pub fn recv<T>(&self, receiver: &Receiver<T>) -> Result<Option<T>, PipelineError> {
        loop {
            self.check()?;
            match receiver.recv_timeout(POLL) {
                Ok(item) => return Ok(Some(item)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}

/// Starts the stages of one run; they share a stop signal and a slot for the first error.
pub struct Stages {
    signal: StopSignal,
    first_error: Arc<Mutex<Option<PipelineError>>>,
}

/// A running stage: [`StageHandle::join`] waits for it and returns what it produced.
pub struct StageHandle<T> {
    name: String,
    handle: JoinHandle<Option<T>>,
    signal: StopSignal,
    first_error: Arc<Mutex<Option<PipelineError>>>,
}

impl Stages {
    /// An empty set whose stages share `signal`.
    pub fn new(signal: StopSignal) -> Self {
        Stages {
            signal,
            first_error: Arc::new(Mutex::new(None)),
        }
    }

    /// The signal the stages share.
    pub fn signal(&self) -> &StopSignal {
        &self.signal
    }

    /// Starts `stage` on its own thread and returns its handle. If it fails, every other
    /// stage is stopped and its error is kept if it is the first.
    pub fn spawn<T, F>(&mut self, name: &str, stage: F) -> StageHandle<T>
    where
        T: Send + 'static,
        F: FnOnce(&StopSignal) -> Result<T, PipelineError> + Send + 'static,
    {
        let signal = self.signal.clone();
        let first_error = Arc::clone(&self.first_error);
        let handle = std::thread::Builder::new()
            .name(format!("keyscribe-{name}"))
            .spawn(move || match stage(&signal) {
                Ok(value) => Some(value),
                Err(error) => {
                    if !matches!(error, PipelineError::Stopped | PipelineError::Interrupted) {
                        keep_first(&first_error, error);
                    }
                    signal.stop();
                    None
                }
            })
            .expect("the operating system refused to start a thread");
        StageHandle {
            name: name.to_string(),
            handle,
            signal: self.signal.clone(),
            first_error: Arc::clone(&self.first_error),
        }
    }
}

fn keep_first(slot: &Mutex<Option<PipelineError>>, error: PipelineError) {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert(error);
}

impl<T> StageHandle<T> {
    /// Waits for the stage and returns what it produced. When it did not finish, the run's
    /// first real error is returned (to the first handle joined after it happened), else
    /// [`PipelineError::Interrupted`] after Ctrl-C, else [`PipelineError::Stopped`].
    pub fn join(self) -> Result<T, PipelineError> {
        let outcome = match self.handle.join() {
            Ok(outcome) => outcome,
            Err(_) => {
                keep_first(
                    &self.first_error,
                    PipelineError::StagePanicked { stage: self.name },
                );
                self.signal.stop();
                None
            }
        };
        if let Some(value) = outcome {
            return Ok(value);
        }
        let first = self
            .first_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        Err(match first {
            Some(error) => error,
            None if self.signal.is_interrupted() => PipelineError::Interrupted,
            None => PipelineError::Stopped,
        })
    }
}

/// The sending end of a bounded queue between two stages, with what happens when it is
/// full: wait for room (nothing is lost: analysing a file), or drop the oldest item waiting
/// (a live stream: never fall behind).
pub struct Outlet<T> {
    sender: Sender<T>,
    /// For a dropping queue: its receiving end, to take the oldest item out, and the count
    /// of items dropped.
    dropping: Option<(Receiver<T>, Arc<AtomicU64>)>,
}

impl<T> Clone for Outlet<T> {
    /// Another sending end of the same queue, for a second producer.
    fn clone(&self) -> Self {
        Outlet {
            sender: self.sender.clone(),
            dropping: self
                .dropping
                .as_ref()
                .map(|(oldest, drops)| (oldest.clone(), Arc::clone(drops))),
        }
    }
}

/// A bounded queue of `capacity` items whose sender waits for room.
pub fn waiting_queue<T>(capacity: usize) -> (Outlet<T>, Receiver<T>) {
    let (sender, receiver) = crossbeam_channel::bounded(capacity);
    (
        Outlet {
            sender,
            dropping: None,
        },
        receiver,
    )
}

/// A bounded queue of `capacity` items whose sender drops the oldest item waiting when it
/// is full, counting the drops in `drops`.
pub fn dropping_queue<T>(capacity: usize, drops: Arc<AtomicU64>) -> (Outlet<T>, Receiver<T>) {
    let (sender, receiver) = crossbeam_channel::bounded(capacity);
    (
        Outlet {
            sender,
            dropping: Some((receiver.clone(), drops)),
        },
        receiver,
    )
}

impl<T> Outlet<T> {
    /// Hands `item` on. A waiting queue waits for room until the signal is raised; a
    /// dropping queue makes room by taking out the oldest item, which is returned.
    pub fn send(&self, signal: &StopSignal, item: T) -> Result<Option<T>, PipelineError> {
        let Some((oldest, drops)) = &self.dropping else {
            return signal.send(&self.sender, item).map(|()| None);
        };
        let mut item = item;
        let mut dropped = None;
        loop {
            signal.check()?;
            match self.sender.try_send(item) {
                Ok(()) => return Ok(dropped),
                Err(TrySendError::Full(returned)) => {
                    item = returned;
                    if let Ok(old) = oldest.try_recv() {
                        drops.fetch_add(1, Ordering::SeqCst);
                        dropped = Some(old);
                    }
                }
                Err(TrySendError::Disconnected(_)) => return Err(PipelineError::Stopped),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_failing_stage_stops_the_others_and_is_reported_once() {
        let mut stages = Stages::new(StopSignal::new());
        let (sender, receiver) = crossbeam_channel::bounded::<u32>(2);
        let producer = stages.spawn("producer", move |signal| {
            for item in 0.. {
                signal.send(&sender, item)?;
            }
            Ok(())
        });
        let consumer = stages.spawn("consumer", move |signal| {
            while let Some(item) = signal.recv(&receiver)? {
                if item == 10 {
                    return Err(PipelineError::Failed {
                        stage: "consumer".into(),
                        message: "item 10 is bad".into(),
                    });
                }
            }
            Ok(())
        });
        let started = Instant::now();
        let error = producer.join().unwrap_err();
        assert!(error.to_string().contains("item 10 is bad"), "{error}");
        assert!(matches!(consumer.join(), Err(PipelineError::Stopped)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_interrupt_stops_a_blocked_producer() {
        let signal = StopSignal::new();
        let mut stages = Stages::new(signal.clone());
        let (sender, _receiver) = crossbeam_channel::bounded::<u32>(1);
        let producer = stages.spawn("producer", move |signal| {
            for item in 0.. {
                signal.send(&sender, item)?;
            }
            Ok(())
        });
        std::thread::sleep(Duration::from_millis(100));
        signal.interrupt();
        assert!(matches!(producer.join(), Err(PipelineError::Interrupted)));
    }

    #[test]
    fn bounded_channels_hold_back_the_producer() {
        let mut stages = Stages::new(StopSignal::new());
        let (sender, receiver) = crossbeam_channel::bounded::<u32>(4);
        let produced = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = Arc::clone(&produced);
        let producer = stages.spawn("producer", move |signal| {
            for item in 0..1000 {
                signal.send(&sender, item)?;
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        });
        std::thread::sleep(Duration::from_millis(200));
        // Nothing consumed yet: the producer is stuck after filling the channel.
        assert!(produced.load(Ordering::SeqCst) <= 5);
        let consumer = stages.spawn("consumer", move |_| Ok(receiver.iter().count()));
        producer.join().unwrap();
        assert_eq!(consumer.join().unwrap(), 1000);
    }

    #[test]
    fn a_dropping_queue_keeps_the_newest_and_counts_the_rest() {
        let signal = StopSignal::new();
        let drops = Arc::new(AtomicU64::new(0));
        let (outlet, receiver) = dropping_queue::<u32>(3, Arc::clone(&drops));
        let mut dropped = Vec::new();
        for item in 0..10 {
            dropped.extend(outlet.send(&signal, item).unwrap());
        }
        assert_eq!(dropped, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(drops.load(Ordering::SeqCst), 7);
        assert_eq!(receiver.try_iter().collect::<Vec<_>>(), [7, 8, 9]);
    }

    #[test]
    fn a_graceful_signal_ends_the_input_first_and_stops_on_the_second_interrupt() {
        let signal = StopSignal::new();
        signal.end_gracefully();
        signal.interrupt();
        assert!(signal.is_ending() && !signal.is_stopped());
        signal.interrupt();
        assert!(signal.is_interrupted() && signal.is_stopped());
    }
}
