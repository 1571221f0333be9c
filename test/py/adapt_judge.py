"""The torch 1.13 judge of `merge --adapt` and prefix alignment on real torchvision architectures.

usage: adapt_judge.py DIR

Writes every checkpoint of fixtures/make_adapt_models.py into DIR, prints {"ready": true}, then answers one
JSON request per input line with one JSON line, keeping the model instances (built once) in memory:

  {"out", "pretrained", "target", "report", "model", "pretrained_key"?}
      torch.load(out, weights_only=True) and model.load_state_dict(out, strict=True) on a fresh instance of
      `model`; out has the target's keys in order; every loaded key equals the pretrained tensor cast with
      torch's .to() (bit for bit); every missing or mismatched key equals the target's; every adapted key
      equals torch computing the same rule (timm's adapt_input_conv and resample_abs_pos_embed, MAE's
      interpolate_pos_embed, torchvision's own interpolate_embeddings, the official Swin load_pretrained,
      row copies and selections), bit for bit for in-chans, rows and select-rows, and within
      1e-5 * max|x| for interpolation.
Answers {"ok": true, "keys", "loaded", "adapted": {key: "exact" | relative difference}} or
{"ok": false, "error"}.
"""
import json
import math
import os
import sys
import traceback

import torch
import torch.nn.functional as F
from torchvision.models.vision_transformer import interpolate_embeddings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'fixtures'))
sys.dont_write_bytecode = True
import make_adapt_models  # noqa: E402
from bit_compare import same_bits, sub  # noqa: E402

INTERP_TOLERANCE = 1e-5


# ----------------------------------------------------------------------------------------- the rules in torch
def adapt_input_conv(in_chans, conv_weight):
    """timm/models/_manipulate.py adapt_input_conv, verbatim."""
    conv_type = conv_weight.dtype
    conv_weight = conv_weight.float()
    O, I, J, K = conv_weight.shape
    if in_chans == 1:
        if I > 3:
            assert conv_weight.shape[1] % 3 == 0
            conv_weight = conv_weight.reshape(O, I // 3, 3, J, K)
            conv_weight = conv_weight.sum(dim=2, keepdim=False)
        else:
            conv_weight = conv_weight.sum(dim=1, keepdim=True)
    elif in_chans != 3:
        if I != 3:
            raise NotImplementedError('Weight format not supported by conversion.')
        repeat = int(math.ceil(in_chans / 3))
        conv_weight = conv_weight.repeat(1, repeat, 1, 1)[:, :in_chans, :, :]
        conv_weight *= (3 / float(in_chans))
    return conv_weight.to(conv_type)


def timm_resample_abs_pos_embed(posemb, new_size, num_prefix_tokens=1, interpolation='bicubic', antialias=True):
    """timm/layers/pos_embed.py resample_abs_pos_embed (old_size inferred as a square)."""
    num_pos_tokens = posemb.shape[1]
    num_new_tokens = new_size[0] * new_size[1] + num_prefix_tokens
    if num_new_tokens == num_pos_tokens and new_size[0] == new_size[1]:
        return posemb
    hw = int(math.sqrt(num_pos_tokens - num_prefix_tokens))
    old_size = hw, hw
    if num_prefix_tokens:
        posemb_prefix, posemb = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    else:
        posemb_prefix, posemb = None, posemb
    embed_dim = posemb.shape[-1]
    orig_dtype = posemb.dtype
    posemb = posemb.float()
    posemb = posemb.reshape(1, old_size[0], old_size[1], -1).permute(0, 3, 1, 2)
    posemb = F.interpolate(posemb, size=new_size, mode=interpolation, antialias=antialias)
    posemb = posemb.permute(0, 2, 3, 1).reshape(1, -1, embed_dim)
    posemb = posemb.to(orig_dtype)
    if posemb_prefix is not None:
        posemb = torch.cat([posemb_prefix, posemb], dim=1)
    return posemb


def mae_interpolate_pos_embed(pos_embed_checkpoint, num_patches, num_extra_tokens):
    """MAE util/pos_embed.py interpolate_pos_embed, on the tensor instead of the model."""
    embedding_size = pos_embed_checkpoint.shape[-1]
    orig_size = int((pos_embed_checkpoint.shape[-2] - num_extra_tokens) ** 0.5)
    new_size = int(num_patches ** 0.5)
    extra_tokens = pos_embed_checkpoint[:, :num_extra_tokens]
    pos_tokens = pos_embed_checkpoint[:, num_extra_tokens:]
    pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
    pos_tokens = F.interpolate(pos_tokens, size=(new_size, new_size), mode='bicubic', align_corners=False)
    pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((extra_tokens, pos_tokens), dim=1)


def torchvision_pos_embedding(pos_embedding, grid, patch_size=16):
    """torchvision.models.vision_transformer.interpolate_embeddings itself (bicubic, align_corners=True)."""
    state = {'encoder.pos_embedding': pos_embedding}
    return interpolate_embeddings(grid * patch_size, patch_size, state)['encoder.pos_embedding']


def swin_relative_position_bias_table(table_pretrained, table_current):
    """microsoft/Swin-Transformer utils.py load_pretrained, the relative_position_bias_table branch."""
    L1, nH1 = table_pretrained.size()
    L2, nH2 = table_current.size()
    assert nH1 == nH2
    S1 = int(L1 ** 0.5)
    S2 = int(L2 ** 0.5)
    resized = F.interpolate(table_pretrained.permute(1, 0).view(1, nH1, S1, S1), size=(S2, S2), mode='bicubic')
    return resized.view(nH2, L2).permute(1, 0)


def expected_adapted(a, pre, tgt):
    """(expected tensor, exact?) for one `adapted` entry of the report."""
    p = a['params']
    dtype = tgt.dtype
    if a['rule'] == 'in-chans':
        return adapt_input_conv(p['to_channels'], pre.float()).to(dtype), True
    if a['rule'] == 'select-rows':
        return pre[torch.tensor(p['indexes'])].to(dtype), True
    if a['rule'] == 'rows':
        out = tgt.clone()
        k = p['copied']
        out[:k] = pre[:k].to(dtype)
        if p['new_rows'] == 'mean':
            out[k:] = pre.float().mean(0).to(dtype)
            return out, 'rows-mean'
        return out, True
    if a['rule'] == 'rel-pos-bias':
        if p.get('value') == 'target':
            return tgt, True
        return swin_relative_position_bias_table(pre.float(), tgt.float()).to(dtype), False
    if a['rule'] == 'pos-embed':
        x = pre.float()
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)
        n, g = p['prefix_tokens'], p['to_grid'][0]
        if p['interp'] == 'timm':
            y = timm_resample_abs_pos_embed(x, (g, g), num_prefix_tokens=n)
        elif p['interp'] == 'mae':
            y = mae_interpolate_pos_embed(x, g * g, n)
        else:
            assert n == 1, 'torchvision keeps exactly one class token'
            y = torchvision_pos_embedding(x, g)
        return (y.squeeze(0) if squeeze else y).to(dtype), False
    raise ValueError('unknown rule ' + a['rule'])


# ---------------------------------------------------------------------------------------------- checking
def check(req, built):
    out = torch.load(req['out'], weights_only=True)
    pre = sub(torch.load(req['pretrained'], weights_only=True), req.get('pretrained_key', ''))
    tgt = torch.load(req['target'], weights_only=True)
    report = json.load(open(req['report']))
    if list(out.keys()) != list(tgt.keys()):
        raise AssertionError('output keys differ from the target keys (or their order)')
    model = built[req['model']]
    model.load_state_dict(out, strict=True)
    done = set()
    for l in report['loaded']:
        if not same_bits(out[l['key']], pre[l['from']].to(tgt[l['key']].dtype)):
            raise AssertionError('loaded key %s differs from pretrained %s' % (l['key'], l['from']))
        done.add(l['key'])
    adapted = {}
    for a in report['adapted']:
        k = a['key']
        expected, exact = expected_adapted(a, pre[a['from']], tgt[k])
        got = out[k]
        if got.dtype != tgt[k].dtype or list(got.shape) != list(tgt[k].shape):
            raise AssertionError('%s: written %s %s, target %s %s' % (k, got.dtype, list(got.shape), tgt[k].dtype, list(tgt[k].shape)))
        if exact is True:
            if not same_bits(got, expected):
                raise AssertionError('%s (%s): not bit-equal to torch' % (k, a['rule']))
            adapted[k] = 'exact'
        elif exact == 'rows-mean':
            kk = a['params']['copied']
            if not same_bits(got[:kk], expected[:kk]):
                raise AssertionError('%s: copied rows not bit-equal' % k)
            rel = ((got[kk:].float() - expected[kk:].float()).abs().max() / pre[a['from']].float().abs().max()).item()
            if not rel <= 1e-6:
                raise AssertionError('%s: mean rows differ from torch float32 mean by %g relative' % (k, rel))
            adapted[k] = rel
        else:
            scale = pre[a['from']].float().abs().max().item()
            rel = ((got.float() - expected.float()).abs().max().item()) / scale
            if not rel <= INTERP_TOLERANCE:
                raise AssertionError('%s (%s): differs from torch by %g x max|x|' % (k, a['rule'], rel))
            adapted[k] = rel
        done.add(k)
    for k, v in tgt.items():
        if k in done:
            continue
        tied = next((m.get('tied_to') for m in report['missing'] if m['key'] == k and m.get('tied_to')), None)
        if tied is None and not same_bits(out[k], v):
            raise AssertionError('%s should keep the target value' % k)
    return {'ok': True, 'keys': len(out), 'loaded': len(report['loaded']), 'adapted': adapted, 'strict_load': 'ok'}


def main():
    out_dir = sys.argv[1]
    built = make_adapt_models.write_all(out_dir)
    print(json.dumps({'ready': True, 'torch': torch.__version__}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = check(json.loads(line), built)
        except Exception as e:  # the answer names the failure; the test prints it
            answer = {'ok': False, 'error': '%s: %s' % (type(e).__name__, e), 'trace': traceback.format_exc()[-1500:]}
        print(json.dumps(answer), flush=True)


if __name__ == '__main__':
    main()
