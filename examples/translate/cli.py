"""simple-translate, berth's take on the lecture's example app.

A small command-line translator in the shape of the lecture's
dlops-io/simple-translate: `python cli.py "good morning" --dest es`. The
lecture's app called an online service; this one carries its own phrase book
so it runs anywhere, containers without network included.
"""

import click
from tabulate import tabulate

PHRASES = {
    "hello": {"es": "hola", "fr": "bonjour", "de": "hallo", "el": "γεια σου", "it": "ciao"},
    "world": {"es": "mundo", "fr": "monde", "de": "Welt", "el": "κόσμος", "it": "mondo"},
    "good morning": {"es": "buenos días", "fr": "bonjour", "de": "guten Morgen", "el": "καλημέρα", "it": "buongiorno"},
    "thank you": {"es": "gracias", "fr": "merci", "de": "danke", "el": "ευχαριστώ", "it": "grazie"},
    "container": {"es": "contenedor", "fr": "conteneur", "de": "Container", "el": "κοντέινερ", "it": "contenitore"},
    "how are you": {"es": "¿cómo estás?", "fr": "comment ça va ?", "de": "wie geht's?", "el": "τι κάνεις;", "it": "come stai?"},
}
LANGUAGES = {"es": "Spanish", "fr": "French", "de": "German", "el": "Greek", "it": "Italian"}


def translate(text: str, dest: str) -> str:
    phrase = text.strip().lower()
    if phrase in PHRASES:
        return PHRASES[phrase][dest]
    # Word by word, keeping words the phrase book does not know.
    return " ".join(PHRASES.get(w, {}).get(dest, w) for w in phrase.split())


@click.command()
@click.argument("text")
@click.option("--dest", "-d", default="es", type=click.Choice(sorted(LANGUAGES)), help="Language to translate to.")
@click.option("--all", "all_languages", is_flag=True, help="Translate to every language.")
def main(text, dest, all_languages):
    """Translate TEXT from English."""
    if all_languages:
        rows = [(LANGUAGES[code], translate(text, code)) for code in sorted(LANGUAGES)]
        click.echo(tabulate(rows, headers=["language", "translation"]))
    else:
        click.echo(translate(text, dest))


if __name__ == "__main__":
    main()
