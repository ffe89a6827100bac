//! Ingestor integration tests: fake Twitch IRC and YouTube servers on
//! 127.0.0.1, the real RabbitMQ, the ingestor in-process (port 0) or as a
//! process.

mod admin;
mod commands;
mod faults;
mod fleet;
mod flow;
mod helpers;
mod hostile;
mod kick;
mod login;
mod privacy;
mod status;
mod webhooks;
mod youtube;
mod youtube_commands;
mod youtube_hostile;
