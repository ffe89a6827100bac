//! The consumer end to end: the real RabbitMQ, real SQLite files, the
//! consumer spawned on port 0 (or its binary, for crash drills), HTTP and
//! WebSocket clients, and headless Chromium for the web page.

mod boundary;
mod commands;
mod fault;
mod helpers;
mod multi_instance;
mod page;
mod pipeline;
mod privacy;
mod privacy_api;
mod rest;
mod search;
mod store;
mod stream_status;
mod upgrade;
mod websocket;
