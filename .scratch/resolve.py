import sys,re
# usage: resolve.py file idx:mode ...  mode in ours|theirs|both|theirs-ours
path=sys.argv[1]; modes=dict(a.split(':') for a in sys.argv[2:])
s=open(path).read()
out=[];i=0;n=0
pat=re.compile(r'^<<<<<<< [^\n]*\n(.*?)^=======\n(.*?)^>>>>>>> [^\n]*\n', re.S|re.M)
pos=0
for m in pat.finditer(s):
    n+=1
    out.append(s[pos:m.start()])
    mode=modes.get(str(n),'keep')
    ours,theirs=m.group(1),m.group(2)
    if mode=='ours': out.append(ours)
    elif mode=='theirs': out.append(theirs)
    elif mode=='both': out.append(ours+theirs)
    elif mode=='theirs-ours': out.append(theirs+ours)
    else: out.append(m.group(0))
    pos=m.end()
out.append(s[pos:])
open(path,'w').write(''.join(out))
print(path, n, 'blocks')
