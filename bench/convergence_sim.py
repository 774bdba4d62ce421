#!/usr/bin/env python3
"""A NumPy model of the study's jobs, for trying remedies before they become
shard rules (docs/convergence.md, "Remedies").

It replays what bench/convergence_study.py measures on real shards, in one
process and without the system: mlp:256,128 on Fashion-MNIST (He init,
batch 64, lr decayed x0.3 at each third), M workers taking turns
(--sched rr: staleness exactly M-1; rand: uniform draws), and the update
rules asgd, dcc (DC-ASGD-c, lambda0 0.04) and dca (DC-ASGD-a, lambda0 2,
mean-square decay 0.95), with optional remedies that the shards do not
implement:
  --sa         staleness-aware rate lr / max(1, staleness)
  --warm N     linear learning-rate warm-up over N updates
  --clip C     bound the compensation term by C * |g|
  --ga         gap-aware damping (Barkai et al., ICLR 2020): divide each
               coordinate of g by max(1, |w - w_bak| / C), C the running mean
               of the coordinate's update size
  --mom MU     momentum
  --la A       look-ahead: send workers w + A * (expected drift)
  --sec S      secant (diagonal) curvature estimate instead of g*g
It is slow (NumPy, one core: about a minute per epoch) and approximate (its
own initialisation, data order and float summation order), so its numbers
are close to, not equal to, the system's. Prints one JSON line per run.

  python3 bench/convergence_sim.py --M 16 --rule asgd --ga --lr 0.2 --epochs 3
Needs python3-numpy and the dataset-fashion-mnist package.
"""
import gzip, numpy as np, sys, time, argparse, json
D='/usr/share/datasets/fashion-mnist/'
def idx(f):
    b=gzip.open(D+f).read()
    magic=int.from_bytes(b[:4],'big'); nd=magic&0xff
    dims=[int.from_bytes(b[4+4*i:8+4*i],'big') for i in range(nd)]
    return np.frombuffer(b,dtype=np.uint8,offset=4+4*nd).reshape(dims)
Xtr=idx('train-images-idx3-ubyte.gz').reshape(60000,784).astype(np.float32)/255
Ytr=idx('train-labels-idx1-ubyte.gz').astype(np.int64)
Xte=idx('t10k-images-idx3-ubyte.gz').reshape(10000,784).astype(np.float32)/255
Yte=idx('t10k-labels-idx1-ubyte.gz').astype(np.int64)
sizes=[784,256,128,10]
def init(seed):
    r=np.random.default_rng(seed); p=[]
    for i in range(3):
        std=np.sqrt(2/sizes[i]) if i<2 else 0.01
        p.append((r.standard_normal((sizes[i],sizes[i+1]))*std).astype(np.float32)); p.append(np.zeros(sizes[i+1],np.float32))
    return np.concatenate([x.ravel() for x in p])
shapes=[]
for i in range(3): shapes+= [(sizes[i],sizes[i+1]),(sizes[i+1],)]
offs=np.cumsum([0]+[int(np.prod(s)) for s in shapes])
def unpack(w): return [w[offs[i]:offs[i+1]].reshape(shapes[i]) for i in range(len(shapes))]
def grad(w,X,Y):
    W1,b1,W2,b2,W3,b3=unpack(w)
    h1=np.maximum(X@W1+b1,0); h2=np.maximum(h1@W2+b2,0); z=h2@W3+b3
    z-=z.max(1,keepdims=True); e=np.exp(z); p=e/e.sum(1,keepdims=True)
    n=len(Y); loss=-np.log(p[np.arange(n),Y]+1e-30).mean()
    dz=p; dz[np.arange(n),Y]-=1; dz/=n
    gW3=h2.T@dz; gb3=dz.sum(0); dh2=dz@W3.T; dh2[h2<=0]=0
    gW2=h1.T@dh2; gb2=dh2.sum(0); dh1=dh2@W2.T; dh1[h1<=0]=0
    gW1=X.T@dh1; gb1=dh1.sum(0)
    return loss, np.concatenate([a.ravel() for a in (gW1,gb1,gW2,gb2,gW3,gb3)]).astype(np.float32)
def acc(w):
    W1,b1,W2,b2,W3,b3=unpack(w)
    h=np.maximum(Xte@W1+b1,0); h=np.maximum(h@W2+b2,0); z=h@W3+b3
    return (z.argmax(1)==Yte).mean()
def run(M, rule, lr, epochs=3, batch=64, seed=1, sched='rr', lam0=None, clip=None, warm=0, sa=False, ms_init='zero', mom=0.0, log=False, ga=False, ga_beta=0.999, la=0.0, la_beta=None, sec=0.0, sec_beta=0.99, sec_max=1e3):
    rng=np.random.default_rng(seed)
    w=init(seed); bak=[w.copy() for _ in range(M)]
    ms=np.zeros_like(w); mo=np.zeros_like(w); ms_started=False
    steps_per_epoch=60000//batch; total=steps_per_epoch*epochs; decay_every=total//3
    if lam0 is None: lam0={'asgd':0,'dcc':0.04,'dca':2.0}[rule]
    pullv=[0]*M; version=0; accs=[]
    order=np.concatenate([rng.permutation(60000) for _ in range(epochs)])
    prev_g=None; prev_p=None; A=np.zeros_like(w); B=np.zeros_like(w)
    pending=None; C=None; U=np.zeros_like(w); tau_ema=float(M-1)
    lb = la_beta if la_beta is not None else 1-1/max(M,2)
    for t in range(total):
        if sched=='rr': m=t%M
        else: m=rng.integers(M)
        idxs=order[t*batch:(t+1)*batch]
        loss,g=grad(bak[m],Xtr[idxs],Ytr[idxs])
        if not np.isfinite(loss): return dict(acc=float('nan'),div=t,accs=accs)
        tau=version-pullv[m]
        eta=lr*(0.3**(version//decay_every))
        if warm: eta*=min(1.0,(version+1)/warm)
        if sa: eta/=max(1,tau)
        if ga and C is not None:
            gap=np.abs(w-bak[m])/(C+1e-12); g=g/np.maximum(1.0,gap)
        if sec:
            if prev_g is not None:
                dg=g-prev_g; dp=bak[m]-prev_p
                A[:]=sec_beta*A+(1-sec_beta)*dg*dp; B[:]=sec_beta*B+(1-sec_beta)*dp*dp
            prev_g=g.copy(); prev_p=bak[m].copy()
            h=np.clip(A/(B+1e-20),0,sec_max)
            g=g+sec*h*(w-bak[m])
        if rule=='asgd': d=g
        else:
            if rule=='dca':
                if ms_init=='first' and not ms_started: ms[:]=g*g; ms_started=True
                else: ms[:]=0.95*ms+0.05*g*g
                lam=lam0/np.sqrt(ms+1e-7)
            else: lam=lam0
            c=lam*g*g*(w-bak[m])
            if clip is not None: c=np.clip(c,-clip*np.abs(g),clip*np.abs(g))
            d=g+c
        wold=w
        if mom: mo[:]=mom*mo-eta*d; w=w+mo
        else: w=w-eta*d
        if ga:
            step=np.abs(w-wold)
            C=step if C is None else ga_beta*C+(1-ga_beta)*step
        U=lb*U+(1-lb)*(w-wold)
        tau_ema=0.99*tau_ema+0.01*tau
        version+=1; pullv[m]=version
        bak[m]= w + la*tau_ema*U if la else w.copy()
        if (t+1)%steps_per_epoch==0: accs.append(float(acc(w)))
        if not np.all(np.isfinite(w)): return dict(acc=float('nan'),div=t,accs=accs)
    return dict(acc=float(acc(w)),accs=accs)
if __name__=='__main__':
    ap=argparse.ArgumentParser()
    ap.add_argument('--M',type=int,default=1); ap.add_argument('--rule',default='asgd'); ap.add_argument('--lr',type=float,default=0.1)
    ap.add_argument('--epochs',type=int,default=3); ap.add_argument('--seed',type=int,default=1); ap.add_argument('--sched',default='rr')
    ap.add_argument('--lam0',type=float); ap.add_argument('--clip',type=float); ap.add_argument('--warm',type=int,default=0); ap.add_argument('--sa',action='store_true')
    ap.add_argument('--ms_init',default='zero'); ap.add_argument('--mom',type=float,default=0); ap.add_argument('--ga',action='store_true'); ap.add_argument('--ga_beta',type=float,default=0.999); ap.add_argument('--la',type=float,default=0); ap.add_argument('--la_beta',type=float); ap.add_argument('--sec',type=float,default=0); ap.add_argument('--sec_beta',type=float,default=0.99); ap.add_argument('--sec_max',type=float,default=1e3)
    a=ap.parse_args(); t0=time.time()
    r=run(a.M,a.rule,a.lr,a.epochs,seed=a.seed,sched=a.sched,lam0=a.lam0,clip=a.clip,warm=a.warm,sa=a.sa,ms_init=a.ms_init,mom=a.mom,ga=a.ga,ga_beta=a.ga_beta,la=a.la,la_beta=a.la_beta,sec=a.sec,sec_beta=a.sec_beta,sec_max=a.sec_max)
    print(json.dumps(dict(vars(a),**r,secs=round(time.time()-t0,1))),flush=True)
