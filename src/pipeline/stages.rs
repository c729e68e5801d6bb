//! Stages on threads joined by bounded channels, with one shared stop signal.
//!
//! Each stage is a closure run on its own thread. Stages hand work on through bounded
//! crossbeam channels, so a fast producer waits for a slow consumer and memory stays bounded.
//! The first stage to fail stops all the others (they see the stop signal or a closed
//! channel) and its error is the one reported; Ctrl-C raises the same signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use super::PipelineError;

/// How often a blocked stage looks at the stop signal.
const POLL: Duration = Duration::from_millis(50);

/// A signal shared by all stages of a run: set when a stage fails or the user interrupts.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    stopped: Arc<AtomicBool>,
    interrupted: Arc<AtomicBool>,
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

    /// Records a user interrupt and stops every stage.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.stop();
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

/// A set of running stages.
pub struct Stages {
    signal: StopSignal,
    handles: Vec<(String, JoinHandle<()>)>,
    first_error: Arc<Mutex<Option<PipelineError>>>,
}

impl Stages {
    /// An empty set whose stages share `signal`.
    pub fn new(signal: StopSignal) -> Self {
        Stages {
            signal,
            handles: Vec::new(),
            first_error: Arc::new(Mutex::new(None)),
        }
    }

    /// The signal the stages share.
    pub fn signal(&self) -> &StopSignal {
        &self.signal
    }

    /// Starts `stage` on its own thread. If it fails, every other stage is stopped and its
    /// error is kept if it is the first.
    pub fn spawn<F>(&mut self, name: &str, stage: F)
    where
        F: FnOnce(&StopSignal) -> Result<(), PipelineError> + Send + 'static,
    {
        let signal = self.signal.clone();
        let first_error = Arc::clone(&self.first_error);
        let handle = std::thread::Builder::new()
            .name(format!("keyscribe-{name}"))
            .spawn(move || {
                if let Err(error) = stage(&signal) {
                    if !matches!(error, PipelineError::Stopped | PipelineError::Interrupted) {
                        first_error
                            .lock()
                            .expect("error slot lock")
                            .get_or_insert(error);
                    }
                    signal.stop();
                }
            })
            .expect("the operating system refused to start a thread");
        self.handles.push((name.to_string(), handle));
    }

    /// Waits for every stage. Returns the first real error, or
    /// [`PipelineError::Interrupted`] after Ctrl-C, or `Ok` when all stages succeeded.
    pub fn join(self) -> Result<(), PipelineError> {
        for (name, handle) in self.handles {
            if handle.join().is_err() {
                let mut first = self.first_error.lock().expect("error slot lock");
                if first.is_none() {
                    *first = Some(PipelineError::StagePanicked { stage: name });
                }
                self.signal.stop();
            }
        }
        let first = self.first_error.lock().expect("error slot lock").take();
        match first {
            Some(error) => Err(error),
            None if self.signal.is_interrupted() => Err(PipelineError::Interrupted),
            None => Ok(()),
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
        stages.spawn("producer", move |signal| {
            for item in 0.. {
                signal.send(&sender, item)?;
            }
            Ok(())
        });
        stages.spawn("consumer", move |signal| {
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
        let error = stages.join().unwrap_err();
        assert!(error.to_string().contains("item 10 is bad"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_interrupt_stops_a_blocked_producer() {
        let signal = StopSignal::new();
        let mut stages = Stages::new(signal.clone());
        let (sender, _receiver) = crossbeam_channel::bounded::<u32>(1);
        stages.spawn("producer", move |signal| {
            for item in 0.. {
                signal.send(&sender, item)?;
            }
            Ok(())
        });
        std::thread::sleep(Duration::from_millis(100));
        signal.interrupt();
        assert!(matches!(stages.join(), Err(PipelineError::Interrupted)));
    }

    #[test]
    fn bounded_channels_hold_back_the_producer() {
        let mut stages = Stages::new(StopSignal::new());
        let (sender, receiver) = crossbeam_channel::bounded::<u32>(4);
        let produced = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = Arc::clone(&produced);
        stages.spawn("producer", move |signal| {
            for item in 0..1000 {
                signal.send(&sender, item)?;
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        });
        std::thread::sleep(Duration::from_millis(200));
        // Nothing consumed yet: the producer is stuck after filling the channel.
        assert!(produced.load(Ordering::SeqCst) <= 5);
        let consumed = std::thread::spawn(move || receiver.iter().count());
        stages.join().unwrap();
        assert_eq!(consumed.join().unwrap(), 1000);
    }
}
