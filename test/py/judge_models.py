"""Real models the judges load ckpt's outputs into with strict=True (plain torch.nn; no torchvision needed).

The module trees repeat those of fixtures/make_fixtures.py and make_fixtures_torch2.py: same parameter and
buffer names in the same order, so `model.state_dict()` has the fixture's keys.
"""
import torch.nn as nn

WIDTHS = (4, 8, 8, 8)


class BasicBlock(nn.Module):
    """torchvision's resnet BasicBlock: the same submodule names (conv1, bn1, relu, conv2, bn2, downsample)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride


class TinyResNet18(nn.Module):
    def __init__(self, num_classes=1000, head=None):
        super().__init__()
        self.inplanes = WIDTHS[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(WIDTHS[0], 2)
        self.layer2 = self._make_layer(WIDTHS[1], 2, stride=2)
        self.layer3 = self._make_layer(WIDTHS[2], 2, stride=2)
        self.layer4 = self._make_layer(WIDTHS[3], 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if head is None:
            self.fc = nn.Linear(WIDTHS[3], num_classes)
        elif head == 'head':
            self.head = nn.Linear(WIDTHS[3], 10)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        for _ in range(1, blocks):
            layers.append(BasicBlock(self.inplanes, planes))
        return nn.Sequential(*layers)


class Wrap(nn.Module):
    def __init__(self, attr, inner):
        super().__init__()
        setattr(self, attr, inner)


class TiedLM(nn.Module):
    """A language-model head tied to its embedding, the way transformers ties lm_head to embed_tokens."""

    def __init__(self, vocab=50, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.embed.weight


def build(spec):
    """spec: 'name' or 'name@prefix.' (the state dict's keys carry `prefix`, e.g. 'module._orig_mod.')."""
    name, _, prefix = spec.partition('@')
    model = {
        'resnet18_tiny': lambda: TinyResNet18(),
        'resnet18_tiny_fc10': lambda: TinyResNet18(num_classes=10),
        'backbone_head10': lambda: TinyResNet18(head='head'),
        'small_mlp': lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2)),
        'torch26_seq': lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3), nn.LayerNorm(3)),
        'tied_lm': lambda: TiedLM(),
    }[name]()
    for attr in reversed([p for p in prefix.split('.') if p]):
        model = Wrap(attr, model)
    return model
