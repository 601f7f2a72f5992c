"""bf16 + channels-last vs fp32: MAML query loss and meta-gradient at initialisation (Conv-4, 5-way 1-shot, 4 tasks, 15 queries).

    python benchmarks/gradient/bf16_effect.py
"""
import torch, torch.nn.functional as F
from metalab.algorithms.gradient.maml import MAML
from metalab.data.task import Task
torch.set_num_threads(1)
g=torch.Generator().manual_seed(1); T,W=4,5
b=Task(torch.rand(T,W,1,28,28,generator=g), torch.arange(W).expand(T,-1).contiguous(), torch.rand(T,W*15,1,28,28,generator=g), torch.arange(W).repeat_interleave(15).expand(T,-1).contiguous())
def grads(**o):
    torch.manual_seed(0); l=MAML(MAML.Options(name='m',ways=W,**o),(1,28,28)); m=l.meta_step(b)
    return torch.cat([p.grad.flatten() for p in l.parameters()]), m
a,ma=grads(); c,mc=grads(precision='bf16',channels_last=True)
print('fp32 loss',float(ma['loss']),'bf16 loss',float(mc['loss']))
print('cosine',float(F.cosine_similarity(a,c,dim=0)),'rel err',float((a-c).norm()/a.norm()))
