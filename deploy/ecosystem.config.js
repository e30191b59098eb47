// PM2 process file for whatsapp-gateway (the Node service's recommended process manager).
//
//   cargo build --release
//   pm2 start deploy/ecosystem.config.js
//   pm2 logs whatsapp-gateway
//   pm2 save && pm2 startup   # start on boot
//
// Back up ./sessions daily: losing it means re-scanning every QR code.
const path = require("path");

const root = path.resolve(__dirname, "..");

module.exports = {
  apps: [
    {
      name: "whatsapp-gateway",
      script: path.join(root, "target/release/whatsapp-gateway"),
      interpreter: "none", // a native binary, not a Node script
      cwd: root, // .env, ./sessions, ./sessions.config.json and ./.api-token live here
      exec_mode: "fork",
      instances: 1, // sessions are stateful: never run two copies on one sessions dir
      autorestart: true,
      restart_delay: 2000,
      max_restarts: 50,
      min_uptime: "10s",
      // SIGTERM starts a graceful drain; PM2 sends SIGKILL after 15 s.
      kill_signal: "SIGTERM",
      kill_timeout: 15000,
      watch: false,
      merge_logs: true,
      time: true,
      env: {
        LOG_LEVEL: "info",
      },
    },
  ],
};
