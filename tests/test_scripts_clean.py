"""Many scripts: real prose of every script survives clean's filters, junk in each script is dropped,
stats.json counts documents per script, and the output is the same for any --workers / --task."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mlmctl.cleaning import DEFAULT_STEPS, build_pipeline
from mlmctl.scripts import PROFILES, script_stats, units

# Hand-written prose, six paragraphs per script on the same everyday topics (city, morning,
# food, a library book, a software manual, mountain weather).
PROSE: dict[str, list[str]] = {
    "japanese": [
        "東京は日本の首都であり、世界でも有数の大都市です。毎日たくさんの人が電車で通勤しています。朝の駅はとても混雑しますが、電車はほとんど時間通りに到着します。",
        "私は毎朝六時に起きて、近くの公園を散歩します。季節によって花や木の様子が変わるので、同じ道を歩いても飽きることがありません。春には桜が咲き、多くの人が花見を楽しみます。",
        "日本料理は見た目の美しさを大切にしています。旬の食材を使い、器や盛り付けにも気を配ります。最近では海外でも寿司やラーメンの店が増えて、日本の食文化が広く知られるようになりました。",
        "昨日、図書館で歴史の本を借りてきました。江戸時代の人々の暮らしについて書かれていて、とても興味深い内容でした。週末にゆっくり読むつもりです。",
        "このソフトウェアは、大量の文章を自動的に整理するために作られました。使い方は簡単で、設定ファイルを書いてコマンドを実行するだけです。詳しい説明は付属の文書をご覧ください。",
        "山に登るときは、天気予報を必ず確認してください。山の天気は変わりやすく、晴れていても急に雨が降ることがあります。十分な水と食べ物を持って、無理のない計画を立てましょう。",
    ],
    "hangul": [
        "서울은 대한민국의 수도이며 정치, 경제, 문화의 중심지이다. 한강이 도시를 가로질러 흐르고, 주변에는 높은 산들이 둘러싸고 있다. 많은 사람들이 주말마다 한강 공원에서 산책을 즐긴다.",
        "나는 매일 아침 일찍 일어나서 커피를 마시며 신문을 읽는다. 요즘은 종이 신문보다 휴대폰으로 기사를 보는 사람이 더 많다고 한다. 그래도 나는 종이를 넘기는 느낌이 좋다.",
        "한국 음식은 발효 식품이 많은 것이 특징이다. 김치와 된장, 고추장은 거의 모든 식탁에 오른다. 최근에는 외국에서도 한국 음식점을 쉽게 찾아볼 수 있게 되었다.",
        "도서관에서 빌린 책을 다 읽고 나서 친구에게 추천해 주었다. 그 책은 조선 시대 사람들의 생활을 자세하게 묘사하고 있어서 무척 흥미로웠다. 다음 주에는 같은 작가의 다른 책을 읽어 볼 생각이다.",
        "이 프로그램은 많은 양의 글을 자동으로 정리하기 위해 만들어졌다. 사용 방법은 간단해서 설정 파일을 작성하고 명령어를 실행하기만 하면 된다. 자세한 내용은 함께 제공되는 문서를 참고하기 바란다.",
        "산에 오를 때에는 반드시 일기 예보를 확인해야 한다. 산의 날씨는 자주 바뀌기 때문에 맑은 날에도 갑자기 비가 내릴 수 있다. 충분한 물과 음식을 준비하고 무리하지 않는 계획을 세우는 것이 좋다.",
    ],
    "thai": [
        "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นศูนย์กลางทางเศรษฐกิจของประเทศ มีแม่น้ำเจ้าพระยาไหลผ่านกลางเมือง ผู้คนจำนวนมากเดินทางด้วยรถไฟฟ้าทุกวัน",
        "ฉันตื่นนอนตอนหกโมงเช้าทุกวันและออกไปเดินเล่นที่สวนสาธารณะใกล้บ้าน อากาศตอนเช้าเย็นสบายและมีคนมาออกกำลังกายมากมาย หลังจากนั้นฉันก็กลับมาทานอาหารเช้ากับครอบครัว",
        "อาหารไทยมีชื่อเสียงไปทั่วโลกเพราะมีรสชาติที่หลากหลาย ทั้งเปรี้ยว หวาน เค็ม และเผ็ด ต้มยำกุ้งและผัดไทยเป็นอาหารที่นักท่องเที่ยวชื่นชอบมากที่สุด",
        "เมื่อวานนี้ฉันไปยืมหนังสือประวัติศาสตร์จากห้องสมุด หนังสือเล่มนี้เล่าเรื่องชีวิตของผู้คนในสมัยอยุธยาได้อย่างน่าสนใจ ฉันตั้งใจว่าจะอ่านให้จบภายในสุดสัปดาห์นี้",
        "โปรแกรมนี้สร้างขึ้นเพื่อจัดระเบียบข้อความจำนวนมากโดยอัตโนมัติ วิธีใช้งานไม่ยาก เพียงเขียนไฟล์ตั้งค่าแล้วสั่งให้โปรแกรมทำงาน รายละเอียดเพิ่มเติมอยู่ในเอกสารที่แนบมา",
        "ก่อนเดินทางขึ้นเขาควรตรวจสอบพยากรณ์อากาศทุกครั้ง สภาพอากาศบนภูเขาเปลี่ยนแปลงได้ง่าย แม้ท้องฟ้าจะแจ่มใสแต่ฝนก็อาจตกลงมาอย่างกะทันหัน ควรเตรียมน้ำและอาหารให้เพียงพอ",
    ],
    "cyrillic": [
        "Москва является столицей России и крупнейшим городом страны. Через центр города протекает Москва-река, а вдоль её берегов расположены парки и набережные. Каждый день миллионы людей пользуются метро.",
        "Каждое утро я встаю в шесть часов и иду гулять в парк недалеко от дома. Летом там поют птицы, а зимой дети катаются на санках. После прогулки я завтракаю и отправляюсь на работу.",
        "Русская кухня известна своими супами и пирогами. Борщ, щи и солянка готовятся почти в каждой семье, а рецепты передаются из поколения в поколение. По праздникам на стол обязательно ставят блины.",
        "Вчера я взял в библиотеке книгу по истории. В ней подробно описана жизнь людей в девятнадцатом веке, их труд, праздники и обычаи. Я собираюсь прочитать её до конца недели.",
        "Эта программа создана для автоматической обработки больших объёмов текста. Пользоваться ею несложно: достаточно написать файл настроек и запустить команду. Подробное описание находится в прилагаемой документации.",
        "Перед походом в горы обязательно посмотрите прогноз погоды. В горах погода меняется очень быстро, и даже в солнечный день может неожиданно пойти дождь. Возьмите с собой достаточно воды и еды.",
    ],
    "greek": [
        "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και μία από τις αρχαιότερες πόλεις του κόσμου. Στο κέντρο της βρίσκεται η Ακρόπολη, που την επισκέπτονται εκατομμύρια τουρίστες κάθε χρόνο. Η πόλη έχει επίσης σύγχρονο μετρό.",
        "Κάθε πρωί ξυπνάω στις έξι και πηγαίνω για περπάτημα στο πάρκο κοντά στο σπίτι μου. Το καλοκαίρι ο αέρας είναι δροσερός νωρίς το πρωί. Μετά την βόλτα τρώω πρωινό με την οικογένειά μου.",
        "Η ελληνική κουζίνα βασίζεται στο ελαιόλαδο, στα λαχανικά και στα φρέσκα ψάρια. Ο μουσακάς και η χωριάτικη σαλάτα είναι γνωστά σε όλο τον κόσμο. Τα τελευταία χρόνια ανοίγουν ελληνικά εστιατόρια σε πολλές χώρες.",
        "Χθες δανείστηκα ένα βιβλίο ιστορίας από τη βιβλιοθήκη. Περιγράφει με λεπτομέρειες τη ζωή των ανθρώπων στα βυζαντινά χρόνια και είναι πολύ ενδιαφέρον. Σκοπεύω να το διαβάσω μέχρι το Σαββατοκύριακο.",
        "Αυτό το πρόγραμμα δημιουργήθηκε για την αυτόματη επεξεργασία μεγάλων κειμένων. Η χρήση του είναι απλή: αρκεί να γράψετε ένα αρχείο ρυθμίσεων και να εκτελέσετε μια εντολή. Περισσότερες πληροφορίες υπάρχουν στην τεκμηρίωση.",
        "Πριν ανεβείτε στο βουνό, ελέγξτε πάντα την πρόγνωση του καιρού. Ο καιρός στα βουνά αλλάζει γρήγορα και μπορεί να βρέξει ξαφνικά ακόμη και σε μια ηλιόλουστη μέρα. Πάρτε μαζί σας αρκετό νερό και φαγητό.",
    ],
    "arabic": [
        "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها. يمر نهر النيل في وسط المدينة، وتنتشر على ضفافه الحدائق والمقاهي. يستخدم ملايين الناس المترو كل يوم للذهاب إلى أعمالهم.",
        "أستيقظ كل صباح في الساعة السادسة وأخرج للمشي في الحديقة القريبة من منزلي. يكون الهواء في الصباح الباكر لطيفا ومنعشا. بعد ذلك أعود إلى البيت وأتناول الفطور مع عائلتي.",
        "يتميز المطبخ العربي بتنوع أطباقه واستخدامه للتوابل والأعشاب. من أشهر الأطباق الحمص والفلافل والكبسة والمنسف. وقد أصبحت المطاعم العربية منتشرة في كثير من دول العالم.",
        "استعرت أمس كتابا في التاريخ من المكتبة العامة. يصف الكتاب حياة الناس في العصر العباسي وصفا دقيقا، وهو ممتع جدا. أنوي أن أنهي قراءته قبل نهاية الأسبوع.",
        "صمم هذا البرنامج لمعالجة كميات كبيرة من النصوص بشكل تلقائي. استخدامه سهل، إذ يكفي أن تكتب ملف الإعدادات ثم تشغل الأمر المناسب. تجد شرحا مفصلا في الوثائق المرفقة.",
        "قبل أن تصعد إلى الجبل، تأكد دائما من نشرة الأحوال الجوية. فالطقس في الجبال يتغير بسرعة، وقد يهطل المطر فجأة حتى في يوم مشمس. احمل معك ما يكفي من الماء والطعام.",
    ],
    "devanagari": [
        "दिल्ली भारत की राजधानी है और देश के सबसे बड़े शहरों में से एक है। यमुना नदी शहर के पास से बहती है। हर दिन लाखों लोग मेट्रो से अपने काम पर जाते हैं।",
        "मैं हर सुबह छह बजे उठता हूँ और घर के पास वाले पार्क में टहलने जाता हूँ। सुबह की हवा ठंडी और ताज़ा होती है। इसके बाद मैं अपने परिवार के साथ नाश्ता करता हूँ।",
        "भारतीय खाना अपने मसालों और स्वाद के लिए पूरी दुनिया में मशहूर है। दाल, चावल, रोटी और सब्ज़ी लगभग हर घर में बनती है। त्योहारों पर लोग तरह तरह की मिठाइयाँ बनाते हैं।",
        "कल मैंने पुस्तकालय से इतिहास की एक किताब ली। इसमें मुग़ल काल के लोगों के जीवन का बहुत विस्तार से वर्णन किया गया है। मैं इसे इस सप्ताह के अंत तक पढ़ लेना चाहता हूँ।",
        "यह प्रोग्राम बड़ी मात्रा में लिखे गए पाठ को अपने आप व्यवस्थित करने के लिए बनाया गया है। इसका उपयोग करना आसान है: बस सेटिंग की फ़ाइल लिखिए और आदेश चलाइए। अधिक जानकारी साथ दिए गए दस्तावेज़ में है।",
        "पहाड़ पर चढ़ने से पहले मौसम का पूर्वानुमान ज़रूर देख लें। पहाड़ों में मौसम जल्दी बदलता है और धूप वाले दिन भी अचानक बारिश हो सकती है। अपने साथ पर्याप्त पानी और खाना रखें।",
    ],
    "han": [
        "北京是中国的首都，也是一座历史悠久的城市。城市中心有故宫和天安门广场，每年都有大量游客前来参观。地铁网络非常发达，出行十分方便。",
        "我每天早上六点起床，然后去家附近的公园散步。公园里有很多老人在打太极拳，也有年轻人在跑步。散步回来以后，我和家人一起吃早饭。",
        "中国菜的种类非常丰富，不同地区有不同的口味。四川菜以麻辣著称，广东菜则讲究清淡和新鲜。现在世界各地都能找到中国餐馆。",
        "昨天我从图书馆借了一本历史书。书中详细描写了宋代普通百姓的生活，内容非常有趣。我打算在周末之前把它读完。",
        "这个程序是为了自动整理大量文本而开发的。使用方法很简单，只要写好配置文件，然后运行命令就可以了。详细说明请参阅附带的文档。",
        "登山之前一定要查看天气预报。山里的天气变化很快，即使是晴天也可能突然下雨。请带上足够的水和食物，制定合理的计划。",
    ],
    "latin": [
        "London is the capital of the United Kingdom and one of the largest cities in Europe. The river Thames flows through the centre of the city. Millions of people use the underground every day.",
        "Every morning I get up at six and go for a walk in the park near my house. In summer the air is cool early in the morning. After the walk I have breakfast with my family.",
        "British cooking has a reputation for being plain, but that has changed a great deal. Markets now sell food from every part of the world. Many families still cook a roast dinner on Sundays.",
        "Yesterday I borrowed a history book from the library. It describes the lives of ordinary people in the nineteenth century in great detail. I plan to finish it before the weekend.",
        "This program was written to organise large amounts of text automatically. It is easy to use: write a settings file and run a command. The documentation that comes with it explains the details.",
        "Before you climb a mountain, always check the weather forecast. The weather in the mountains changes quickly, and it can rain suddenly even on a sunny day. Take enough water and food with you.",
    ],
}

FULL_STEPS = [*DEFAULT_STEPS, "gopher_repetition", "fineweb_quality"]
SYMBOLS = "★★★ ### 12345 $$$ %%% ^^^ &&& *** 67890 @@@ !!! ==="


def documents(script: str) -> list[str]:
    """Each paragraph, consecutive pairs as two-paragraph documents, and all six as one."""
    paras = PROSE[script]
    return paras + ["\n\n".join(paras[i:i + 2]) for i in range(0, len(paras), 2)] + ["\n\n".join(paras)]


def _words(script: str) -> list[str]:
    text = PROSE[script][0]
    if PROFILES[script].unit == "char":  # pseudo-words of three characters for menus and fragments
        return [text[i:i + 3] for i in range(0, 60, 3)]
    return text.split()


def junk(script: str) -> dict[str, str]:
    """Documents of this script that the default steps should drop, by kind."""
    words, first = _words(script), PROSE[script][0]
    sentence = first.split("。")[0] if "。" in first else " ".join(first.split()[:8])
    letter = next(ch for ch in first if ch.isalpha())
    kinds = {
        "fragment": units(first)[0] if PROFILES[script].unit == "char" else words[0],
        "symbols": f"{SYMBOLS} {words[1]}",
        "char_run": f"{sentence} {letter * 24} {sentence}",
        "repeated_lines": "\n".join([sentence] * 6 + [PROSE[script][1]]),
    }
    if script != "latin":  # UTF-8 read as cp1252 (English prose is ASCII: no mojibake to make)
        kinds["mojibake"] = first.encode("utf-8").decode("cp1252", errors="replace")
    return kinds


def boilerplate(script: str) -> dict[str, str]:
    """Web boilerplate of this script that the opt-in repetition steps should drop."""
    words = _words(script)
    return {
        "menu": "\n".join(words[:12]),
        "spam": " ".join([words[2], words[3]] * 30),
        "footer": PROSE[script][2] + "\n\n" + "\n\n".join([PROSE[script][4]] * 3),
    }


def test_every_script_has_its_dominant_name():
    for script in PROSE:
        assert {script_stats(d).dominant for d in documents(script)} == {script}
    assert script_stats("").dominant == "none" and script_stats("12345 !!!").dominant == "none"
    assert script_stats("שלום עולם, זהו טקסט בעברית").dominant == "other"  # Hebrew: no profile of its own
    assert script_stats("我用 Python 写代码").dominant == "han"
    assert units("ที่นี่") == ["ที่", "นี่"]  # a Thai consonant keeps its vowel and tone marks


@pytest.mark.parametrize("steps", [DEFAULT_STEPS, FULL_STEPS], ids=["default", "with_repetition"])
@pytest.mark.parametrize("script", list(PROSE))
def test_real_prose_survives_and_junk_is_dropped(script, steps):
    pipe = build_pipeline(steps, {})
    docs = documents(script)
    kept = sum(pipe.run(d)[1] is None for d in docs)
    assert kept >= 0.95 * len(docs), (script, pipe.dropped)
    bad = {**junk(script), **(boilerplate(script) if steps is FULL_STEPS else {})}
    survivors = [kind for kind, text in bad.items() if pipe.run(text)[1] is None]
    assert survivors == [], (script, survivors)
    # Every document counted under one script, the prose under its own; every drop under one script.
    assert sum(n for n, _ in pipe.scripts.values()) == len(docs) + len(bad)
    assert pipe.scripts[script][0] >= len(docs)
    total_dropped = sum(n for reasons in pipe.dropped.values() for n, _ in reasons.values())
    per_script = sum(n for st in pipe.script_dropped.values() for r in st.values() for n, _ in r.values())
    assert per_script == total_dropped == len(docs) - kept + len(bad)


def test_scripts_english_tuned_thresholds_would_drop():
    """The profiles matter: each of these real texts fails an English-tuned rule of main's filters."""
    from mlmctl.cleaning import QualityFilter
    from mlmctl.repetition import FineWebQuality

    short_words = [
        "वह घर पर है और मैं भी यहाँ हूँ। तुम कब आओगे?",  # Hindi: mean word length 2.75
        "나는 오늘 집에 간다. 너도 같이 갈래? 비가 와서 좀 늦을 것 같다.",  # Korean: 2.1
    ]
    for text in short_words:
        assert sum(map(len, text.split())) / len(text.split()) < 3.0
        assert QualityFilter().filter(text) == (True, ""), text
    kana = "これはとてもおもしろいほんです。わたしはまいにちすこしずつよんでいます。"  # kana only, no Han
    assert script_stats(kana).dominant == "japanese"
    assert build_pipeline(DEFAULT_STEPS, {}).run(kana)[1] is None
    thai = "\n".join(PROSE["thai"])  # no line ends in a stop: Thai has none
    assert FineWebQuality().reason(thai) is None


def _corpus(root: Path) -> dict[str, tuple[int, int]]:
    """Two JSON-lines files mixing every script's prose and junk; returns script -> (in, kept)."""
    root.mkdir(parents=True)
    expected = {}
    lines: list[str] = []
    for script in PROSE:
        docs, bad = documents(script), list(junk(script).values())
        # Doubled prose: the second copy goes to exact dedup, counted per script too.
        for text in docs + docs[:2] + bad:
            lines.append(json.dumps({"text": text}, ensure_ascii=False))
        expected[script] = (len(docs) + 2 + len(bad), len(docs))
    for i in range(2):
        (root / f"part-{i}.jsonl").write_text("\n".join(lines[i::2]) + "\n", encoding="utf-8")
    return expected


def _shards(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/shard-*"))}


def test_stats_per_script_and_output_independent_of_workers_and_tasks(run_cli, tmp_path):
    expected = _corpus(tmp_path / "in")
    base = ["clean", "--input", str(tmp_path / "in"), "--set", "validation_fraction=0.2"]
    code, _, err = run_cli(*base, "--output", str(tmp_path / "w1"))
    assert code == 0, err
    stats = json.loads((tmp_path / "w1" / "stats.json").read_text())
    per = stats["scripts"]
    # Junk documents are measured as they were when dropped: mojibake is Latin-1 letters, symbols may
    # have no script of their own; so compare the prose (kept) exactly and the totals overall.
    for script, (n_in, kept) in expected.items():
        assert per[script]["documents_out"] == kept, (script, per[script])
        assert per[script]["dropped"]["dedup"]["duplicate"]["documents"] == 2, script
    assert sum(p["documents_in"] for p in per.values()) == stats["documents_in"] == sum(n for n, _ in expected.values())
    assert sum(p["characters_in"] for p in per.values()) == stats["characters_in"]
    assert sum(p["characters_out"] for p in per.values()) == stats["characters_out"]["total"]
    for p in per.values():
        dropped = sum(v["documents"] for reasons in p["dropped"].values() for v in reasons.values())
        assert p["documents_in"] == p["documents_out"] + dropped, p
    with gzip.open(next((tmp_path / "w1" / "train").glob("shard-*")), "rt", encoding="utf-8") as f:
        assert len({script_stats(json.loads(line)["text"]).dominant for line in f}) == len(PROSE)

    code, _, err = run_cli(*base, "--output", str(tmp_path / "w2"), "--workers", "2")
    assert code == 0, err
    for task in ("0/2", "1/2", None):
        code, _, err = run_cli(*base, "--output", str(tmp_path / "t"), *(["--task", task] if task else []))
        assert code == 0, err
    ref = _shards(tmp_path / "w1")
    assert _shards(tmp_path / "w2") == ref and _shards(tmp_path / "t") == ref
    for out in ("w2", "t"):
        assert (tmp_path / out / "stats.json").read_bytes() == (tmp_path / "w1" / "stats.json").read_bytes()


def test_docs_table_names_every_profile():
    """docs/clean.md's per-script table has a row for every dominant script the code knows."""
    doc = (Path(__file__).parents[1] / "docs" / "clean.md").read_text(encoding="utf-8")
    table = doc[doc.index("| dominant script |"):doc.index("Everything else - `max_chars`")]
    assert [s for s in PROFILES if f"`{s}`" not in table] == []


MIXED = {
    # Mixed-script documents count under the script that dominates their letters, and survive.
    "japanese": "このライブラリは Python 3.12 と asyncio を使って、HTTP リクエストを並列に処理します。設定は YAML ファイルに書き、コマンドラインから実行します。",
    "cyrillic": "Для установки выполните pip install mlmctl, затем запустите команду mlmctl clean с файлом настроек. Параметр workers задаёт число процессов.",
    "latin": "Aaj mausam bahut accha hai, चलो पार्क में घूमने चलते हैं। Phir shaam ko hum movie dekhenge aur dinner bahar karenge.",
    "arabic": "بلغ عدد سكان المدينة 20 مليون نسمة في عام 2023، وفقا لآخر إحصاء رسمي. ويعمل معظمهم في قطاع الخدمات والتجارة.",
    "han": "我们使用 PyTorch 训练 BERT 模型，batch size 设为 256，learning rate 为 1e-4。训练大约需要三天。",
    "hangul": "이 프로그램은 Python으로 작성되었으며 Linux와 macOS에서 실행됩니다. 설치 후 터미널에서 mlmctl 명령을 입력하세요.",
    "thai": "ระบบนี้ใช้ Python และ PyTorch ในการฝึกโมเดล BERT ผู้ใช้สามารถตั้งค่าผ่านไฟล์ YAML ได้ง่าย",
    "greek": "Το πρόγραμμα γράφτηκε σε Python και τρέχει σε Linux. Μετά την εγκατάσταση, γράψτε mlmctl clean στο τερματικό.",
}
CODE = '''def read_config(path: str) -> dict:
    """Load the YAML file at path and return it as a dict."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data'''


@pytest.mark.parametrize("steps", [DEFAULT_STEPS, FULL_STEPS], ids=["default", "with_repetition"])
def test_mixed_script_emoji_and_code_documents(steps):
    pipe = build_pipeline(steps, {})
    for script, text in MIXED.items():
        assert pipe.run(text)[1:] == (None, None), script
        assert pipe.last_script == script
    # Emoji in prose are not letters but do not sink it; emoji alone is no text (no letters, no script).
    assert pipe.run("Happy birthday to my best friend, have a wonderful day! 🎉🎂🥳 See you tonight.")[1] is None
    assert pipe.run("😀🎉🚀😀🎉🚀🙏🙏😀🎉🚀😀🎉🚀🙏🙏😀🎉🚀😀🎉🚀🙏🙏")[1] is not None
    assert pipe.last_script == "none"
    # A code-heavy document (identifiers, brackets, quotes) is Latin text to these filters and stays.
    assert pipe.run(CODE)[1] is None
    assert pipe.scripts["none"][0] == 1 and sum(n for n, _ in pipe.scripts.values()) == len(MIXED) + 3
