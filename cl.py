import socket, time, threading
def one(i):
    s=socket.create_connection(("127.0.0.1",19580)); t=time.time()
    s.sendall(b"GET / HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    buf=b""; first=None
    while True:
        d=s.recv(4096)
        if d and first is None: first=time.time()-t
        if not d: break
        buf+=d
    print(i, buf.split(b"\r\n")[0], "first byte %.2f eof %.2f"%(first, time.time()-t))
ts=[threading.Thread(target=one,args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
