"""A generated Chinese corpus for `make demo-zh` and the tests: no download, a few seconds.

`documents(n, seed)` yields `{"id", "text", "source"}` records: prose about one of four topics
(体育 sports, 科技 technology, 美食 food, 旅行 travel) built from fixed seed phrases, with
`source` = `zh-demo:<topic>` (the demo task's label, as `python-docs:<package>` is for the English
demo). A document mixes its topic's sentences with topic-neutral ones, so short extracts are
not trivially separable by one keyword; each topic has many more words than a short text
shows, which is what pretraining (seeing which words occur together) helps with.

`ui_strings`, `poems` and `mixed` give the other kinds of real text the clean tests use.

    python -c "from mlmctl.zh_corpus import write_jsonl; write_jsonl('data/zh-demo.jsonl', 4000)"
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "体育": ("足球 篮球 比赛 球队 教练 冠军 运动员 联赛 进球 决赛 训练 体育馆 球迷 裁判 奥运会 游泳 跑步 "
           "马拉松 网球 乒乓球 排球 金牌 队长 球场 主场 客场 比分 赛季 世界杯 田径",
           "赢得了 输掉了 参加了 打进了 观看了 训练了 组织了 报道了"),
    "科技": ("电脑 手机 软件 芯片 网络 数据 程序 人工智能 机器人 算法 服务器 工程师 系统 互联网 "
           "屏幕 电池 操作系统 数据库 云计算 代码 应用 平台 硬件 模型 处理器 卫星 实验室 传感器 智能 网站",
           "开发了 发布了 升级了 测试了 设计了 研究了 安装了 优化了"),
    "美食": ("饺子 米饭 面条 火锅 豆腐 包子 烤鸭 蔬菜 水果 厨师 餐厅 味道 汤 茶 酱油 辣椒 "
           "牛肉 鸡蛋 菜单 早餐 午餐 晚餐 甜点 月饼 小吃 厨房 食材 米粉 馒头 饭馆",
           "做了 尝了 吃了 煮了 品尝了 准备了 点了 推荐了"),
    "旅行": ("飞机 火车 酒店 景点 护照 行李 导游 长城 海边 山区 地图 门票 机场 车站 游客 "
           "古镇 博物馆 寺庙 签证 风景 公园 湖泊 高铁 背包 旅馆 码头 城市 乡村 草原 沙漠",
           "参观了 预订了 游览了 拍摄了 走访了 安排了 经过了 到达了"),
}
SUBJECTS = "我们 他 她 记者 专家 很多人 这位老师 我的朋友 年轻人 当地居民 学生们 一家公司".split()
TIMES = "昨天 今天上午 去年 今年春天 上个星期 周末 最近 晚上 每年夏天 那一天".split()
ADJ = "非常好 很有意思 不太容易 特别重要 越来越受欢迎 十分难忘 比以前更好 让人满意".split()
NEUTRAL = [
    "大家都觉得这件事值得讨论。", "其实很多问题并没有简单的答案。", "这是一个普通的日子。",
    "天气不错，阳光很好。", "他们一边说话一边喝水。", "后来的事情谁也没有想到。",
    "时间过得很快。", "有人同意，也有人反对。", "这个消息很快传开了。", "我们下次再聊吧。",
]
POEM_CHARS = "春风花月夜山水江河云雨雪天地人心长明白红青秋冬日光远近高楼古道西东南北来去归思故乡行"
UI = [
    "确定", "取消", "打开文件", "保存(&S)", "另存为(&A)...", "访问已被拒绝", "文件不存在", "正在下载更新",
    "请输入密码", "网络连接失败，请稍后重试", "是否删除所选项目？", "设置", "帮助", "关于本程序", "复制链接",
    "显示隐藏文件", "无法连接到服务器", "操作成功完成", "用户名或密码错误", "选择语言",
]
ENGLISH = "Python GitHub Linux API JSON Docker Wi-Fi CPU iPhone Google".split()


def _sentence(rng: random.Random, topic: str) -> str:
    nouns, verbs = (s.split() for s in TOPICS[topic])
    n1, n2 = rng.sample(nouns, 2)
    form = rng.randrange(4)
    if form == 0:
        return f"{rng.choice(TIMES)}，{rng.choice(SUBJECTS)}{rng.choice(verbs)}{n1}和{n2}。"
    if form == 1:
        return f"{rng.choice(SUBJECTS)}认为{n1}{rng.choice(ADJ)}。"
    if form == 2:
        return f"关于{n1}的{n2}，{rng.choice(SUBJECTS)}说{rng.choice(ADJ)}！"
    return f"{rng.choice(SUBJECTS)}在{n1}旁边{rng.choice(verbs)}{n2}，觉得{rng.choice(ADJ)}。"


def document(rng: random.Random, topic: str) -> str:
    parts = [_sentence(rng, topic) if rng.random() < 0.75 else rng.choice(NEUTRAL)
             for _ in range(rng.randint(3, 8))]
    return "".join(parts)


def documents(n: int, seed: int = 0):
    """n topic documents, topics in turn, deterministic for a seed."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    for i in range(n):
        topic = names[i % len(names)]
        yield {"id": f"zh-{i:06d}", "text": document(rng, topic), "source": f"zh-demo:{topic}"}


def poems(n: int, seed: int = 0) -> list[str]:
    """Regulated-verse-like quatrains: four lines of 5 or 7 characters."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice((5, 7))
        lines = ["".join(rng.choices(POEM_CHARS, k=k)) + ("，" if j % 2 == 0 else "。") for j in range(4)]
        out.append("\n".join(lines))
    return out


def ui_strings() -> list[str]:
    return list(UI)


def mixed(n: int, seed: int = 0) -> list[str]:
    """Chinese sentences with English product and technical names in them."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)}用 {rng.choice(ENGLISH)} {rng.choice(TOPICS['科技'][1].split())}"
            f"一个新的{rng.choice(TOPICS['科技'][0].split())}，{rng.choice(ADJ)}。" for _ in range(n)]


def write_jsonl(path: str | Path, n: int, seed: int = 0) -> None:
    """The demo corpus as JSON lines (`text` and `source` fields), written atomically."""
    from mlmctl.shards import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents(n, seed)))
