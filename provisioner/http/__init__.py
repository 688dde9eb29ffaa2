"""The HTTP front ends: one hardened non-blocking loop (`loop`) under both ports.

- `loop.HttpServer`: accepts, reads a request head and body under caps and deadlines (parsed by
  h11), and writes answers; what a request means is its subclasses' business.
- `provisioner.boot.bootsrv.BootServer`: the port machines are sent to; answers inline, files by sendfile.
- `wsgi.ApiServer`: the operators' API; complete requests go to the Flask app on a bounded pool.
"""
