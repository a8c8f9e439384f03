#!/usr/bin/env python3
"""A local stand-in for the WhatsApp Cloud API media endpoints, for the quick
start only: GET /{media-id} answers {url, mime_type, sha256, file_size, id};
GET /download/{media-id} answers the bytes. Media ids map to files given as
ID=PATH arguments. Requires `Authorization: Bearer <token>` (env MEDIA_TOKEN)."""
import hashlib, http.server, json, mimetypes, os, sys

PORT = int(os.environ.get("MEDIA_PORT", "8093"))
TOKEN = os.environ.get("MEDIA_TOKEN", "demo-token")
MEDIA = dict(arg.split("=", 1) for arg in sys.argv[1:])


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, b'{"error":{"code":190}}')
        parts = [p for p in self.path.split("/") if p]
        download = len(parts) == 2 and parts[0] == "download"
        media_id = parts[-1] if parts else ""
        path = MEDIA.get(media_id)
        if path is None:
            return self.reply(404, b'{"error":{"code":100}}')
        data = open(path, "rb").read()
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if download:
            return self.reply(200, data, mime)
        info = {"messaging_product": "whatsapp", "id": media_id, "mime_type": mime,
                "url": f"http://127.0.0.1:{PORT}/download/{media_id}",
                "sha256": hashlib.sha256(data).hexdigest(), "file_size": len(data)}
        self.reply(200, json.dumps(info).encode())


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
