from django.db import migrations, models

SAMPLE_PRODUCTS = 50


def add_sample_products(apps, schema_editor):
    product = apps.get_model("catalog", "Product")
    db = schema_editor.connection.alias
    product.objects.using(db).bulk_create(
        product(name=f"product {n}", price_cents=100 * n) for n in range(1, SAMPLE_PRODUCTS + 1)
    )


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Product",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
                ("price_cents", models.PositiveIntegerField()),
            ],
        ),
        migrations.RunPython(add_sample_products, migrations.RunPython.noop),
    ]
